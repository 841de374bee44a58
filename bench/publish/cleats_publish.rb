# Confirmed publishing with cleats from Ruby: Sneakers::Publisher#publish (each call waits for the
# broker's confirm) from THREADS threads sharing one publisher. Prints one JSON line.
# Usage: ruby cleats_publish.rb THREADS QUEUE N
require 'sneakers'
require 'json'

threads, queue, n = Integer(ARGV[0]), ARGV[1], Integer(ARGV[2])
Sneakers.configure amqp: ENV.fetch('AMQP_URL', 'amqp://guest:guest@127.0.0.1:5672'), exchange: '',
                   log: $stderr
Sneakers.logger.level = Logger::WARN
publisher = Sneakers::Publisher.new
body = '{"id":0,"email":"someone@example.com","kind":"welcome","at":"2026-11-21T08:00:00Z","locale":"en"}'
publisher.publish(body, to_queue: queue) # connect outside the timing
started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
per = (n - 1) / threads
Array.new(threads) { Thread.new { per.times { publisher.publish(body, to_queue: queue) } } }.each(&:join)
elapsed = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
puts JSON.generate(messages: per * threads, threads: threads, msgs_per_s: (per * threads / elapsed).round)
