require_relative "helper"
require "zlib"

# Configuration, registries, formats and errors: no broker needed except where a connection
# error is the point.
class ConfigTest < Minitest::Test
  def setup
    Sneakers.clear!
    @log = StringIO.new
    Sneakers.logger = Logger.new(@log)
  end

  def teardown
    Sneakers.clear!
  end

  def test_defaults_are_sneakers_defaults
    c = Sneakers::CONFIG
    assert_equal 30, c[:heartbeat]
    assert_equal 30, c[:amqp_heartbeat]
    assert_equal 10, c[:prefetch]
    assert_equal 10, c[:threads]
    assert_equal 4, c[:workers]
    assert_equal false, c[:share_threads]
    assert_equal true, c[:ack]
    assert_equal 0.2, c[:start_worker_delay]
    assert_equal "sneakers", c[:exchange]
    assert_equal({ type: :direct, durable: true, auto_delete: false, arguments: {} }, c[:exchange_options])
    assert_equal({ durable: true, auto_delete: false, exclusive: false, arguments: {} }, c[:queue_options])
    assert_equal({}, c[:hooks])
    assert_equal Sneakers::Handlers::Oneshot, c[:handler]
    assert_nil c[:metrics]
    assert_equal [Sneakers::ErrorReporter::DefaultLogger], c[:error_reporters].map(&:class)
    assert_equal $stdout, c[:log]
    assert_equal "debug", c[:log_level]
    assert_equal 5, c[:log_rotate_age]
    assert_equal 1_048_576, c[:log_rotate_size]
    assert_equal "sneakers.pid", c[:pid_path]
    assert_equal false, c[:daemonize]
    assert_nil c[:runner_config_file]
    assert_equal(ENV["RABBITMQ_URL"] || "amqp://guest:guest@localhost:5672", c[:amqp])
    assert_equal "/", c[:vhost] unless ENV["RABBITMQ_URL"]
  end

  def test_vhost_comes_from_the_amqp_uri_unless_given
    Sneakers.configure(amqp: "amqp://guest:guest@h:5672/v%2F1")
    assert_equal "v/1", Sneakers::CONFIG[:vhost]
    Sneakers.configure(amqp: "amqp://guest:guest@h:5672", vhost: "other")
    assert_equal "other", Sneakers::CONFIG[:vhost]
    Sneakers.configure(amqp: "amqp://guest:guest@h:5672")
    assert_equal "/", Sneakers::CONFIG[:vhost]
  end

  def test_configure_merges_deeply
    Sneakers.configure(prefetch: 50, queue_options: { arguments: { "x-max-priority" => 10 } })
    Sneakers.configure(queue_options: { durable: false })
    q = Sneakers::CONFIG[:queue_options]
    assert_equal({ durable: false, auto_delete: false, exclusive: false, arguments: { "x-max-priority" => 10 } }, q)
    assert_equal 50, Sneakers::CONFIG[:prefetch]
    assert_equal 10, Sneakers::CONFIG[:threads]
    assert Sneakers.configured?
  end

  def test_deprecated_keys_map
    Sneakers.configure(exchange_type: :topic, exchange_arguments: { "a" => 1 }, durable: false,
                       arguments: { "x-queue-type" => "quorum" })
    c = Sneakers::CONFIG
    assert_equal :topic, c[:exchange_options][:type]
    assert_equal({ "a" => 1 }, c[:exchange_options][:arguments])
    assert_equal false, c[:exchange_options][:durable]
    assert_equal false, c[:queue_options][:durable]
    assert_equal({ "x-queue-type" => "quorum" }, c[:queue_options][:arguments])
    refute c.key?(:durable)
  end

  def test_inspect_redacts_the_password
    Sneakers.configure(amqp: "amqp://user:s3cret@rabbit.example:5672/vh")
    refute_includes Sneakers::CONFIG.inspect, "s3cret"
    assert_includes Sneakers::CONFIG.inspect, "amqp://user:***@rabbit.example:5672/vh"
    assert_equal "amqp://user:s3cret@rabbit.example:5672/vh", Sneakers::CONFIG[:amqp]
  end

  def test_clear_resets_to_defaults
    Sneakers.configure(prefetch: 99)
    Sneakers.clear!
    assert_equal 10, Sneakers::CONFIG[:prefetch]
    refute Sneakers.configured?
  end

  def test_block_form_with_setters_and_closest_option_warning
    Sneakers.configure do |c|
      c.amqp = "amqp://guest:guest@127.0.0.1:5672"
      c.heartbeat = 2
      c.worker_prefetch = 10
      c.threads = 3
    end
    Sneakers.logger = Logger.new(@log) # configure rebuilt the logger from CONFIG[:log]
    assert_equal 2, Sneakers::CONFIG[:heartbeat]
    assert_equal 3, Sneakers::CONFIG[:threads]
    assert_equal "amqp://guest:guest@127.0.0.1:5672", Sneakers::CONFIG[:amqp]
    out = capture_log { Sneakers.configure { |c| c.worker_prefetch = 10 } }
    assert_match(/unknown option `worker_prefetch`.*did you mean `prefetch`/, out)
    b = Sneakers::ConfigurationBuilder.new
    Cleats::Native.known_options.each { |name| assert_respond_to b, "#{name}=" }
  end

  def capture_log
    io = StringIO.new
    Sneakers.configure(log: Logger.new(io))
    yield
    io.string
  end

  def test_worker_new_does_not_connect
    Sneakers.configure(amqp: "amqp://guest:guest@127.0.0.1:1", log: Logger.new(@log))
    klass = Class.new do
      include Sneakers::Worker
      from_queue "unit", prefetch: 3, routing_key: %w[a b]
      def work(msg)
        msg == "x" ? ack! : reject!
      end
    end
    w = klass.new
    assert_equal :ack, w.work("x")
    assert_equal :reject, w.work("y")
    assert_equal :requeue, w.requeue!
    assert_equal "unit", w.queue.name
    assert_equal 3, w.opts[:prefetch]
    assert_match(/\Aworker-unit:1:[a-z0-9]+\z/, w.id)
    assert_equal "unit", klass.queue_name
    assert_equal({ prefetch: 3, routing_key: %w[a b] }, klass.queue_opts)
    assert_includes Sneakers::Worker::Classes, klass
    assert_respond_to w, :logger
    assert_respond_to w.metrics, :increment
  end

  def test_content_type_and_encoding_registries
    assert_raises(ArgumentError) { Sneakers::ContentType.register(content_type: "x", serializer: 1, deserializer: ->(a) { a }) }
    assert_raises(ArgumentError) { Sneakers::ContentType.register(content_type: "x", serializer: ->(a, b) { a }, deserializer: ->(a) { a }) }
    assert_raises(ArgumentError) { Sneakers::ContentEncoding.register(content_encoding: "x", encoder: ->(a) { a }) }
    Sneakers::ContentType.register(content_type: "application/json", serializer: ->(p) { JSON.dump(p) },
                                   deserializer: ->(p) { JSON.parse(p) })
    assert_equal '{"a":1}', Sneakers::ContentType.serialize({ "a" => 1 }, "application/json")
    assert_equal "raw", Sneakers::ContentType.deserialize("raw", "text/unknown")
    Sneakers::ContentEncoding.register(content_encoding: "gzip", encoder: ->(p) { Zlib.gzip(p) },
                                       decoder: ->(p) { Zlib.gunzip(p) })
    assert_equal "abc", Sneakers::ContentEncoding.decode(Sneakers::ContentEncoding.encode("abc", "gzip"), "gzip")
    Sneakers::ContentType.reset!
    Sneakers::ContentEncoding.reset!
    assert_equal '{"a":1}', Sneakers::ContentType.deserialize('{"a":1}', "application/json")
  end

  def test_middleware_use_delete_to_a
    a = Class.new
    b = Class.new
    Sneakers.middleware.use(a, 1)
    Sneakers.middleware.use(b)
    assert_equal [{ class: a, args: [1] }, { class: b, args: [] }], Sneakers.middleware.to_a
    Sneakers.middleware.delete(a)
    assert_equal [b], Sneakers.middleware.to_a.map { |m| m[:class] }
  ensure
    Sneakers.middleware.to_a.clear
  end

  def test_production_format
    line = Sneakers::Support::ProductionFormatter.call("INFO", Time.utc(2024, 1, 2, 3, 4, 5), nil, "hello")
    assert_equal "2024-01-02T03:04:05Z p-#{Process.pid} t-#{Thread.current.object_id.to_s(36)} INFO: hello\n", line
  end

  def test_module_functions
    %i[logger logger= publish configured? server= server? configure_server daemonize! error_reporters
       middleware rake_worker_classes rake_worker_classes=].each { |m| assert_respond_to Sneakers, m }
    Sneakers.server = true
    yielded = nil
    Sneakers.configure_server { |s| yielded = s }
    assert_equal Sneakers, yielded
    Sneakers.rake_worker_classes = -> { [] }
    assert_respond_to Sneakers.rake_worker_classes, :call
  ensure
    Sneakers.server = false
    Sneakers.rake_worker_classes = nil
  end

  def test_every_contract_path_requires
    %w[sneakers sneakers/runner sneakers/tasks sneakers/handlers/maxretry sneakers/handlers/oneshot
       sneakers/metrics/logging_metrics sneakers/metrics/statsd_metrics sneakers/metrics/newrelic_metrics
       sneakers/metrics/null_metrics sneakers/spawner sneakers/cli sneakers/workergroup sneakers/publisher
       sneakers/content_type sneakers/content_encoding sneakers/error_reporter cleats].each { |path| require path }
    assert defined?(Sneakers::Metrics::StatsdMetrics)
    assert defined?(Sneakers::Spawner)
  end

  def test_errors_map_to_exception_classes
    assert Cleats::ConfigError < ArgumentError
    assert Cleats::ConnectionError < Cleats::Error
    assert Cleats::AuthenticationError < Cleats::Error
    assert_equal Cleats::ChannelError, Sneakers::ChannelError
    e = assert_raises(Cleats::ConfigError) { Cleats::Native::Engine.new('{"amqp": "redis://x"}') }
    assert_includes e.message, "amqp"
    klass = Class.new do
      include Sneakers::Worker
      from_queue "err-q", exchange_options: { type: "directt" }
    end
    e = assert_raises(Cleats::ConfigError) { klass.new.run }
    assert_includes e.message, "exchange_options.type"
  end

  def test_connection_refused_and_bad_credentials
    klass = Class.new do
      include Sneakers::Worker
      from_queue "refused-q"
    end
    Sneakers.configure(amqp: "amqp://guest:guest@127.0.0.1:1", log: Logger.new(@log))
    e = assert_raises(Cleats::ConnectionError) { klass.new.run }
    assert_includes e.message, "127.0.0.1:1"
    e = assert_raises(Cleats::TimeoutError) { Sneakers::Publisher.new(publish_timeout: 0.3).publish("x", to_queue: "q") }
    assert_includes e.message, "publishing"
    Sneakers.configure(amqp: "amqp://guest:wrong@127.0.0.1:5672", log: Logger.new(@log))
    e = assert_raises(Cleats::AuthenticationError) { klass.new.run }
    refute_includes e.message, "wrong"
    assert_raises(Cleats::AuthenticationError) { Sneakers::Publisher.new.publish("x", to_queue: "q") }
  end

  FakeSession = Struct.new(:host, :port, :user, :pass, :vhost)

  def test_connection_option_takes_the_address_of_a_bunny_session
    opts = Cleats::Connection.apply(connection: FakeSession.new("rabbit.local", 5673, "u", "p w", "vh"))
    assert_equal "amqp://u:p%20w@rabbit.local:5673", opts[:amqp]
    assert_equal "vh", opts[:vhost]
    lazy = Cleats::Connection.apply(connection: -> { FakeSession.new("h", 1, "a", "b", "/") })
    assert_equal "amqp://a:b@h:1", lazy[:amqp]
    e = assert_raises(ArgumentError) { Cleats::Connection.apply(connection: Object.new) }
    assert_includes e.message, "amqp"
  end

  def test_metrics_classes
    require "sneakers/metrics/logging_metrics"
    require "sneakers/metrics/statsd_metrics"
    require "sneakers/metrics/newrelic_metrics"
    assert_equal 5, Sneakers::Metrics::NullMetrics.new.timing("x") { 5 }
    io = StringIO.new
    Sneakers.logger = Logger.new(io)
    logging = Sneakers::Metrics::LoggingMetrics.new
    logging.increment("work.W.started")
    logging.timing("work.W.time") { :done }
    assert_match(/INC: work.W.started/, io.string)
    assert_match(/TIME: work.W.time \d/, io.string)
    statsd = Class.new do
      attr_reader :calls
      def initialize = @calls = []
      def increment(m) = @calls << [:increment, m]
      def time(m)
        @calls << [:time, m]
        yield
      end
    end.new
    s = Sneakers::Metrics::StatsdMetrics.new(statsd)
    s.increment("a")
    assert_equal 7, s.timing("b") { 7 }
    assert_equal [[:increment, "a"], [:time, "b"]], statsd.calls
  end
end
