# The Ruby peer: what Sneakers 2.x does per process, written out with Bunny (Debian's ruby-bunny):
# one connection, a channel with basic.qos(prefetch), a manual-ack consumer whose deliveries are
# posted to a Concurrent::FixedThreadPool of THREADS; each pool thread works, then acks.
# Usage: ruby bunny_worker.rb QUEUE PREFETCH THREADS MODE (MODE: ack, json)
require 'bunny'
require 'concurrent'
require 'json'
require_relative 'harness'

queue_name, prefetch, threads, mode = ARGV[0], Integer(ARGV[1]), Integer(ARGV[2]), ARGV[3]
BenchHarness.ready_then_go

conn = Bunny.new(ENV.fetch('AMQP_URL', 'amqp://guest:guest@127.0.0.1:5672'), log_level: :warn)
conn.start
channel = conn.create_channel
channel.prefetch(prefetch)
queue = channel.queue(queue_name, durable: false)
pool = Concurrent::FixedThreadPool.new(threads)
parse = mode == 'json'
queue.subscribe(manual_ack: true, block: false) do |delivery_info, _metadata, body|
  pool.post do
    JSON.parse(body) if parse
    BenchHarness.hit
    channel.ack(delivery_info.delivery_tag, false)
  end
end
BenchHarness.report_forever
sleep
