require_relative "helper"
require "zlib"

# Workers against the real broker: return values, params, content types, middleware, metrics,
# error reporters, publishing.
class WorkerTest < CleatsTestCase
  def test_return_values_as_seen_on_the_broker
    q = queue("settle")
    dlq = queue("settle-dlq")
    CleatsTest.delete_queue(dlq)
    seen = Thread::Queue.new
    klass = worker_class(q, queue_options: { durable: false, arguments: { "x-dead-letter-exchange" => "",
                                                                          "x-dead-letter-routing-key" => dlq } }) do
      define_method(:work_with_params) do |msg, info, _meta|
        seen << [msg, info.redelivered?]
        case msg
        when "ack" then ack!
        when "reject" then reject!
        when "requeue" then info.redelivered? ? ack! : requeue!
        when "error" then raise "boom"
        else :something_else
        end
      end
    end
    dlq_worker = worker_class(dlq) { define_method(:work) { |_m| :noop_keep } }
    run_worker(dlq_worker).stop # declares the dead-letter queue, consumes nothing
    run_worker(klass)
    %w[ack reject requeue noop error].each { |m| Sneakers.publish(m, to_queue: q) }
    got = Array.new(6) { Timeout.timeout(10) { seen.pop } }
    assert_equal [["requeue", false], ["requeue", true]], got.select { |m, _| m == "requeue" }
    assert_queue_counts(dlq, [2, 0]) # reject and error, dead-lettered
    assert_queue_counts(q, [0, 1])   # noop stays unacknowledged
    @running.pop.stop
    assert_queue_counts(q, [1, 0])   # ...and goes back when the channel closes
  end

  def test_publish_batch_puts_every_message_on_the_queue_before_returning
    q = queue("batch")
    seen = Thread::Queue.new
    klass = worker_class(q) { define_method(:work) { |m| seen << m; ack! } }
    run_worker(klass).stop # declares the queue
    Sneakers::Publisher.new.publish_batch((1..300).map(&:to_s), to_queue: q, headers: { "batch" => true })
    assert_queue_counts(q, [300, 0], 0) # confirmed: already there when publish_batch returned
    run_worker(klass)
    got = Array.new(300) { Timeout.timeout(10) { seen.pop } }
    assert_equal (1..300).to_a, got.map(&:to_i).sort
    e = assert_raises(Cleats::UnroutableError) do
      Sneakers::Publisher.new.publish_batch(%w[x y], to_queue: "cleats-rb-no-such-queue", mandatory: true)
    end
    assert_includes e.message, "NO_ROUTE"
  end

  def test_ack_false_settles_nothing
    q = queue("noack")
    seen = Thread::Queue.new
    klass = worker_class(q, ack: false) { define_method(:work) { |m| seen << m; reject! } }
    run_worker(klass)
    3.times { |i| Sneakers.publish("m#{i}", to_queue: q) }
    assert_equal %w[m0 m1 m2], Array.new(3) { Timeout.timeout(10) { seen.pop } }.sort
    assert_queue_counts(q, [0, 0])
  end

  def test_work_with_params_gets_bunny_like_delivery_info_and_metadata
    q = queue("params")
    seen = Thread::Queue.new
    klass = worker_class(q) { define_method(:work_with_params) { |m, i, md| seen << [m, i, md]; ack! } }
    run_worker(klass)
    headers = { "a" => 1, "nested" => { "list" => [1, "two", { "x" => true }] }, sym: "s" }
    Sneakers.publish("body", to_queue: q, headers: headers, content_type: "text/plain", correlation_id: "c1",
                             priority: 3, message_id: "m1", type: "kind", app_id: "app", reply_to: "r",
                             expiration: 60_000, timestamp: 1_700_000_000, persistence: true)
    msg, info, meta = Timeout.timeout(10) { seen.pop }
    # Acked, so settled: the views still answer, though the delivery has let go of its data.
    assert_queue_counts(q, [0, 0])
    assert_equal "body", msg
    assert_equal q, info.routing_key
    assert_equal q, info[:routing_key]
    assert_equal "", info.exchange
    refute info.redelivered?
    assert_kind_of Integer, info.delivery_tag
    assert_equal info.delivery_tag, info[:delivery_tag]
    assert_kind_of String, info.consumer_tag
    assert_equal({ "a" => 1, "nested" => { "list" => [1, "two", { "x" => true }] }, "sym" => "s" }, meta.headers)
    assert_equal meta.headers, meta[:headers]
    assert_equal "text/plain", meta.content_type
    assert_equal "c1", meta[:correlation_id]
    assert_equal 3, meta.priority
    assert_equal "m1", meta.message_id
    assert_equal "kind", meta.type
    assert_equal "app", meta.app_id
    assert_equal "r", meta.reply_to
    assert_equal "60000", meta.expiration
    assert_equal Time.at(1_700_000_000), meta.timestamp
    assert_equal 2, meta.delivery_mode
    assert_nil meta.user_id
    assert_equal "c1", meta.to_hash[:correlation_id]
  end

  def test_json_and_gzip_round_trips
    Sneakers::ContentType.register(content_type: "application/json", serializer: ->(p) { JSON.dump(p) },
                                   deserializer: ->(p) { JSON.parse(p) })
    Sneakers::ContentEncoding.register(content_encoding: "gzip", encoder: ->(p) { Zlib.gzip(p) },
                                       decoder: ->(p) { Zlib.gunzip(p) })
    q = queue("json")
    q2 = queue("json-props")
    seen = Thread::Queue.new
    own = worker_class(q, content_type: "application/json", content_encoding: "gzip") do
      define_method(:work) { |m| seen << [:own, m]; ack! }
    end
    by_props = worker_class(q2) { define_method(:work) { |m| seen << [:props, m]; ack! } }
    run_worker(own)
    run_worker(by_props)
    own.enqueue({ "n" => 1, "list" => [1, 2] })
    Sneakers.publish({ "m" => "ü" }, to_queue: q2, content_type: "application/json", content_encoding: "gzip")
    got = Array.new(2) { Timeout.timeout(10) { seen.pop } }.to_h
    assert_equal({ "n" => 1, "list" => [1, 2] }, got[:own])
    assert_equal({ "m" => "ü" }, got[:props])
  end

  class Recorder
    def initialize(app, log, name)
      @app = app
      @log = log
      @name = name
    end

    def call(msg, delivery_info, metadata, handler)
      @log << "#{@name}:before:#{msg}"
      res = @app.call("#{msg}+#{@name}", delivery_info, metadata, handler)
      @log << "#{@name}:after:#{res}"
      res
    end
  end

  def test_middleware_order
    log = Thread::Queue.new
    Sneakers.middleware.use(Recorder, log, "outer")
    Sneakers.middleware.use(Recorder, log, "inner")
    q = queue("mw")
    klass = worker_class(q) { define_method(:work) { |m| log << "work:#{m}"; ack! } }
    run_worker(klass)
    Sneakers.publish("m", to_queue: q)
    got = Array.new(5) { Timeout.timeout(10) { log.pop } }
    assert_equal ["outer:before:m", "inner:before:m+outer", "work:m+outer+inner", "inner:after:ack", "outer:after:ack"], got
    assert_queue_counts(q, [0, 0])
  end

  class MetricsRecorder
    attr_reader :events

    def initialize
      @events = Thread::Queue.new
    end

    def increment(name)
      @events << [:increment, name]
    end

    def timing(name)
      yield
    ensure
      @events << [:timing, name]
    end
  end

  def test_metrics_names_per_message
    metrics = MetricsRecorder.new
    Sneakers.configure(metrics: metrics)
    q = queue("metrics")
    klass = worker_class(q) { define_method(:work) { |m| m == "err" ? raise("x") : ack! } }
    run_worker(klass)
    Sneakers.publish("ok", to_queue: q)
    first = Array.new(4) { Timeout.timeout(10) { metrics.events.pop } }
    n = klass.name
    assert_equal [[:increment, "work.#{n}.started"], [:timing, "work.#{n}.time"],
                  [:increment, "work.#{n}.handled.ack"], [:increment, "work.#{n}.ended"]], first
    Sneakers.publish("err", to_queue: q)
    second = Array.new(4) { Timeout.timeout(10) { metrics.events.pop } }
    assert_includes second, [:increment, "work.#{n}.handled.error"]
  end

  def test_error_reporters_get_the_context
    reports = Thread::Queue.new
    reporter = ->(ex, worker, context) { reports << [ex, worker, context] }
    Sneakers.configure(error_reporters: [reporter])
    q = queue("errors")
    klass = worker_class(q) { define_method(:work) { |_m| raise ArgumentError, "bad input" } }
    run_worker(klass)
    Sneakers.publish("payload", to_queue: q)
    ex, worker, context = Timeout.timeout(10) { reports.pop }
    assert_kind_of ArgumentError, ex
    assert_equal "bad input", ex.message
    assert_kind_of klass, worker
    assert_equal klass.name, context[:class]
    assert_equal "payload", context[:message]
    assert_includes context[:log_msg], "payload"
    assert_equal q, context[:delivery_info].routing_key
    assert_respond_to context[:metadata], :headers
    assert_queue_counts(q, [0, 0]) # Oneshot: an error rejects without requeue
  end

  def test_publish_from_a_worker_and_enqueue
    q1 = queue("pub-from")
    q2 = queue("pub-to")
    seen = Thread::Queue.new
    target = worker_class(q2) { define_method(:work) { |m| seen << m; ack! } }
    source = worker_class(q1) do
      define_method(:work) { |m| publish("forwarded:#{m}", to_queue: q2); ack! }
    end
    run_worker(target)
    run_worker(source)
    source.enqueue("one")
    target.enqueue("direct")
    got = Array.new(2) { Timeout.timeout(10) { seen.pop } }.sort
    assert_equal ["direct", "forwarded:one"], got
  end

  def test_named_exchange_and_routing_keys
    exchange = CleatsTest.unique("x")
    q = queue("bound")
    seen = Thread::Queue.new
    klass = worker_class(q, exchange: exchange, exchange_options: { type: :topic, durable: false, auto_delete: true },
                            routing_key: ["a.*", "b.#"]) { define_method(:work) { |m| seen << m; ack! } }
    run_worker(klass)
    publisher = Sneakers::Publisher.new(exchange: exchange, exchange_options: { type: :topic, durable: false, auto_delete: true })
    publisher.publish("1", routing_key: "a.x")
    publisher.publish("2", routing_key: "b.y.z")
    publisher.publish("3", routing_key: "c")
    assert_equal %w[1 2], Array.new(2) { Timeout.timeout(10) { seen.pop } }.sort
    publisher.close
  ensure
    CleatsTest.delete_exchange(exchange)
  end
end
