# Shared by the Ruby bench workers: the READY/GO handshake with bench/run.py and progress lines.
# Protocol (stdout): "READY" once loaded; the harness writes "GO" on stdin, then the worker
# connects and consumes; every 20 ms it prints "N <messages done> <wall time of the last one>".
# Counting is per thread (no lock on the hot path); the reporter sums the slots.
module BenchHarness
  @lock = Mutex.new
  @slots = []

  def self.hit
    slot = (Thread.current[:bench_slot] ||= @lock.synchronize { [0, 0.0].tap { |s| @slots << s } })
    slot[0] += 1
    slot[1] = Process.clock_gettime(Process::CLOCK_REALTIME)
  end

  def self.ready_then_go
    $stdout.sync = true
    puts 'READY'
    $stdin.gets
  end

  def self.report_forever
    Thread.new do
      Thread.current.name = 'bench-report'
      loop do
        n = 0
        last = 0.0
        @slots.each do |s|
          n += s[0]
          last = s[1] if s[1] > last
        end
        puts "N #{n} #{last}"
        sleep 0.02
      end
    end
  end

  # Latency mode: the body carries "ts" (publish wall time); the lags are written to
  # BENCH_LAT_OUT once BENCH_LAT_TARGET messages have been seen.
  @lags = []
  def self.lag(body)
    lag = Process.clock_gettime(Process::CLOCK_REALTIME) - JSON.parse(body).fetch('ts')
    @lags << lag
    return unless @lags.size == Integer(ENV.fetch('BENCH_LAT_TARGET'))

    File.write("#{ENV.fetch('BENCH_LAT_OUT')}.tmp", @lags.join("\n"))
    File.rename("#{ENV.fetch('BENCH_LAT_OUT')}.tmp", ENV.fetch('BENCH_LAT_OUT'))
  end
end
