# Confirmed publishing with cleats from Ruby, one shared Sneakers::Publisher. Prints one JSON line.
# Usage: ruby cleats_publish.rb HOW QUEUE N
#   HOW = THREADS (e.g. 16): that many threads calling #publish, each waiting for its confirm;
#   HOW = batchB (e.g. batch100): one thread calling #publish_batch with B messages at a time.
require 'sneakers'
require 'json'

how, queue, n = ARGV[0], ARGV[1], Integer(ARGV[2])
Sneakers.configure amqp: ENV.fetch('AMQP_URL', 'amqp://guest:guest@127.0.0.1:5672'), exchange: '',
                   log: $stderr
Sneakers.logger.level = Logger::WARN
publisher = Sneakers::Publisher.new
body = '{"id":0,"email":"someone@example.com","kind":"welcome","at":"2026-11-21T08:00:00Z","locale":"en"}'
publisher.publish(body, to_queue: queue) # connect outside the timing
started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
if how.start_with?('batch')
  batch = Integer(how.delete_prefix('batch'))
  bodies = Array.new(batch, body)
  sent = (n - 1) / batch * batch
  (sent / batch).times { publisher.publish_batch(bodies, to_queue: queue) }
  label = { batch: batch }
else
  threads = Integer(how)
  per = (n - 1) / threads
  sent = per * threads
  Array.new(threads) { Thread.new { per.times { publisher.publish(body, to_queue: queue) } } }.each(&:join)
  label = { threads: threads }
end
elapsed = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
puts JSON.generate(messages: sent, **label, msgs_per_s: (sent / elapsed).round)
