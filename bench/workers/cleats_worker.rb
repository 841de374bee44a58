# A Sneakers-style worker on cleats (the gem), run in this process by Cleats::WorkerSet as each
# `sneakers work` child does. Usage: ruby cleats_worker.rb QUEUE PREFETCH THREADS MODE
# MODE: ack (work acks), json (JSON.parse then ack), latency (records publish-to-work lag),
# varied (0-4 ms of sleep), pause (a BENCH_PAUSE-second sleep), spin (a CPU-bound loop of
# BENCH_SPIN iterations).
require 'sneakers'
require 'json'
require_relative 'harness'

QUEUE, PREFETCH, THREADS, MODE = ARGV[0], Integer(ARGV[1]), Integer(ARGV[2]), ARGV[3]

Sneakers.configure amqp: ENV.fetch('AMQP_URL', 'amqp://guest:guest@127.0.0.1:5672'),
                   exchange: '', prefetch: PREFETCH, threads: THREADS, workers: 1,
                   queue_options: { durable: false }, log: $stderr
Sneakers.logger.level = Logger::WARN

class BenchWorker
  include Sneakers::Worker
  from_queue QUEUE

  case MODE
  when 'ack'
    def work(_msg)
      BenchHarness.hit
      ack!
    end
  when 'json'
    def work(msg)
      JSON.parse(msg)
      BenchHarness.hit
      ack!
    end
  when 'latency'
    def work(msg)
      BenchHarness.lag(msg)
      BenchHarness.hit
      ack!
    end
  when 'varied'
    # I/O-bound work of 0-4 ms (2 on average), as jobs that wait for a database or an API:
    # threads finish out of order. Used by bench/ab.py --mode varied.
    def work(_msg)
      sleep(rand * 0.004)
      BenchHarness.hit
      ack!
    end
  when 'pause'
    # A short job that waits without the GVL, as a cache or database call does: sleep for
    # BENCH_PAUSE seconds (default 0.0001). Used by bench/ab.py --mode pause.
    PAUSE = Float(ENV.fetch('BENCH_PAUSE', '0.0001'))
    def work(_msg)
      sleep(PAUSE)
      BenchHarness.hit
      ack!
    end
  when 'spin'
    # CPU-bound work under the GVL: BENCH_SPIN iterations of a Ruby loop (3,000 take about
    # 45 us on one idle core). A prefetch window of such jobs lasts about as long as an ack's
    # round trip to the broker, so when acks leave decides the rate. Used by bench/ab.py
    # --mode spin.
    SPIN = Integer(ENV.fetch('BENCH_SPIN', '3000'))
    def work(_msg)
      i = 0
      i += 1 while i < SPIN
      BenchHarness.hit
      ack!
    end
  else
    raise ArgumentError, "unknown mode #{MODE}"
  end
end

BenchHarness.ready_then_go
Cleats::WorkerSet.new([BenchWorker.new(nil, nil, {})]).start
BenchHarness.report_forever
sleep
