# Confirmed publishing with Bunny (the Ruby peer): confirm_select, then publish BATCH messages and
# wait_for_confirms, repeated. Prints one JSON line. Usage: ruby bunny_publish.rb BATCH QUEUE N
require 'bunny'
require 'json'

batch, queue, n = Integer(ARGV[0]), ARGV[1], Integer(ARGV[2])
conn = Bunny.new(ENV.fetch('AMQP_URL', 'amqp://guest:guest@127.0.0.1:5672'), log_level: :warn).start
ch = conn.create_channel
ch.confirm_select
exchange = ch.default_exchange
body = '{"id":0,"email":"someone@example.com","kind":"welcome","at":"2026-11-21T08:00:00Z","locale":"en"}'
started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
(n / batch).times do
  batch.times { exchange.publish(body, routing_key: queue) }
  raise 'nacked' unless ch.wait_for_confirms
end
elapsed = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
puts JSON.generate(messages: n / batch * batch, batch: batch, msgs_per_s: (n / batch * batch / elapsed).round)
conn.close
