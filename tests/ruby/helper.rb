# Shared helpers of the Ruby suite: the broker URL, unique names, broker inspection through
# rabbitmqctl, and waiting. Tests run against the real RabbitMQ at $AMQP_URL; with no broker they
# fail (never skip).
require "minitest/autorun"
require "securerandom"
require "stringio"
require "timeout"
require "open3"
require "sneakers"

module CleatsTest
  AMQP = ENV.fetch("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
  ROOT = File.expand_path("../..", __dir__)
  RUBY_LIB = File.join(ROOT, "bindings-ruby", "lib")

  # Child processes (CLI, rake) load the same cleats as this process: the source tree's
  # bindings-ruby/lib when it was put on the load path, else the installed gem.
  unless Gem.loaded_specs["cleats"]
    ENV["RUBYLIB"] = [RUBY_LIB, ENV["RUBYLIB"]].compact.join(File::PATH_SEPARATOR)
  end

  def self.unique(name)
    "cleats-rb-#{name}-#{SecureRandom.hex(4)}"
  end

  # {queue => [ready, unacked]} for the queues whose names start with `prefix`.
  def self.queue_counts(prefix = "cleats-rb-")
    out, status = Open3.capture2("rabbitmqctl", "-q", "list_queues", "name", "messages_ready", "messages_unacknowledged")
    raise "rabbitmqctl list_queues failed" unless status.success?

    out.lines.map(&:split).select { |name, *| name&.start_with?(prefix) }
       .to_h { |name, ready, unacked| [name, [ready.to_i, unacked.to_i]] }
  end

  def self.delete_queue(name)
    system("rabbitmqctl", "-q", "delete_queue", name, out: File::NULL, err: File::NULL)
  end

  def self.delete_exchange(name)
    system("rabbitmqctl", "-q", "eval", "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"#{name}\">>), false, <<\"cleats-test\">>).",
             out: File::NULL, err: File::NULL)
  end
end

# Base class: a fresh configuration per test (default exchange, non-durable queues, quiet log),
# queues and engines cleaned up afterwards.
class CleatsTestCase < Minitest::Test
  def setup
    Sneakers.clear!
    Sneakers::ContentType.reset!
    Sneakers::ContentEncoding.reset!
    Sneakers.middleware.to_a.clear
    @log = StringIO.new
    Sneakers.configure(amqp: CleatsTest::AMQP, exchange: "", log: Logger.new(@log), threads: 4, prefetch: 10,
                       queue_options: { durable: false }, stop_timeout: 5)
    @queues = []
    @running = []
  end

  def teardown
    @running.each { |w| w.stop rescue nil }
    @queues.each { |q| CleatsTest.delete_queue(q) }
    Sneakers.clear!
    # Global registries: left filled, they would leak into tests of other classes (random order).
    Sneakers.middleware.to_a.clear
  end

  def queue(name)
    q = CleatsTest.unique(name)
    @queues << q
    q
  end

  # Starts a worker (its own engine); stopped in teardown.
  def run_worker(klass)
    w = klass.new
    w.run
    @running << w
    w
  end

  def wait_until(seconds = 10, message = "condition")
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + seconds
    loop do
      result = yield
      return result if result
      flunk "timed out waiting for #{message}" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep 0.05
    end
  end

  # Waits until `queue` shows [ready, unacked] on the broker.
  def assert_queue_counts(queue, expected, seconds = 10)
    seen = nil
    wait_until(seconds, "#{queue} to hold #{expected.inspect} (last seen #{seen.inspect})") do
      seen = CleatsTest.queue_counts(queue)[queue]
      seen == expected
    end
  end

  # Defines a worker class under a unique constant name (Sneakers keys metrics by class name).
  def worker_class(queue, opts = {}, &body)
    name = "W#{SecureRandom.hex(4)}"
    klass = Class.new do
      include Sneakers::Worker
      from_queue queue, opts
    end
    Object.const_set(name, klass)
    klass.class_eval(&body) if body
    klass
  end
end
