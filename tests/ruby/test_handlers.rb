require_relative "helper"

# Maxretry end to end, and a custom handler driving the engine through the channel facade.
class HandlersTest < CleatsTestCase
  def teardown
    super
    (@exchanges || []).each { |x| CleatsTest.delete_exchange(x) }
  end

  def maxretry_names(q)
    @queues.push("#{q}-retry", "#{q}-error")
    (@exchanges ||= []).push("#{q}-retry", "#{q}-error", "#{q}-retry-requeue")
  end

  def test_maxretry_retries_then_parks_in_the_error_queue
    q = queue("maxretry")
    maxretry_names(q)
    attempts = Thread::Queue.new
    klass = worker_class(q, handler: Sneakers::Handlers::Maxretry, retry_timeout: 100, retry_max_times: 2) do
      define_method(:work_with_params) do |msg, _info, meta|
        deaths = (meta.headers || {})["x-death"] || []
        attempts << [msg, deaths.sum { |d| d["queue"] == q ? d["count"] : 0 }, deaths.map { |d| d.keys.sort }]
        raise ArgumentError, "always fails"
      end
    end
    run_worker(klass)
    Sneakers.publish("job", to_queue: q)
    seen = Array.new(3) { Timeout.timeout(15) { attempts.pop } }
    assert_equal [0, 1, 2], seen.map { |_, count, _| count }
    assert_includes seen.last[2].first, "count" # x-death entries arrive as string-keyed hashes
    assert_queue_counts("#{q}-error", [1, 0], 15)
    assert_queue_counts(q, [0, 0])

    parked = Thread::Queue.new
    error_reader = worker_class("#{q}-error", exchange: "") do
      define_method(:work_with_params) { |msg, _i, meta| parked << [msg, meta.headers]; ack! }
    end
    run_worker(error_reader)
    body, headers = Timeout.timeout(10) { parked.pop }
    assert_equal "job", body
    info = JSON.parse(headers["retry_info"])
    info = info.last if info.is_a?(Array)
    assert_equal 3, info["num_attempts"]
    assert_equal "ArgumentError", info["error_class"]
    assert_equal "always fails", info["error_message"]
    assert info["failed_at"]
    assert_operator info["backtrace"].size, :<=, 10
  end

  def test_maxretry_requeue_bypasses_counting
    q = queue("maxretry-requeue")
    maxretry_names(q)
    seen = Thread::Queue.new
    klass = worker_class(q, handler: Sneakers::Handlers::Maxretry, retry_timeout: 100, retry_max_times: 0) do
      define_method(:work_with_params) { |m, info, _| seen << m; info.redelivered? ? ack! : requeue! }
    end
    run_worker(klass)
    Sneakers.publish("again", to_queue: q)
    assert_equal %w[again again], Array.new(2) { Timeout.timeout(10) { seen.pop } }
    assert_queue_counts(q, [0, 0])
    assert_queue_counts("#{q}-error", [0, 0])
  end

  # An exponential-backoff style handler: it declares its own topology and settles through the
  # Bunny-style channel it was given.
  class ParkingHandler
    def initialize(channel, queue, opts)
      @channel = channel
      @opts = opts
      @parking = channel.exchange("#{queue.name}-parking", type: :topic, durable: false, auto_delete: false)
      parked = channel.queue("#{queue.name}-parked", durable: false)
      parked.bind(@parking, routing_key: "#")
      @queue_name = queue.name
    end

    def acknowledge(delivery_info, _metadata, _msg)
      @channel.acknowledge(delivery_info.delivery_tag, false)
    end

    def reject(delivery_info, _metadata, _msg, requeue = false)
      if requeue
        @channel.nack(delivery_info.delivery_tag, false, true)
      else
        @channel.reject(delivery_info.delivery_tag, false)
      end
    end

    def error(delivery_info, _metadata, msg, err)
      @parking.publish(msg, routing_key: delivery_info.routing_key, headers: { "error" => err.message })
      @channel.acknowledge(delivery_info.delivery_tag, false)
    end

    def noop(_delivery_info, _metadata, _msg); end
  end

  def test_custom_handler_uses_the_channel_facade
    q = queue("custom")
    @queues << "#{q}-parked"
    (@exchanges ||= []) << "#{q}-parking"
    seen = Thread::Queue.new
    klass = worker_class(q, handler: ParkingHandler) do
      define_method(:work_with_params) do |m, info, _|
        seen << m
        case m
        when "fail" then raise "parked it"
        when "drop" then reject!
        when "retry" then info.redelivered? ? ack! : requeue!
        else ack!
        end
      end
    end
    run_worker(klass)
    %w[ok fail drop retry].each { |m| Sneakers.publish(m, to_queue: q) }
    got = Array.new(5) { Timeout.timeout(10) { seen.pop } }
    assert_equal %w[drop fail ok retry retry], got.sort
    assert_queue_counts(q, [0, 0])
    assert_queue_counts("#{q}-parked", [1, 0])
    parked = Thread::Queue.new
    reader = worker_class("#{q}-parked") { define_method(:work_with_params) { |m, _i, md| parked << [m, md.headers]; ack! } }
    run_worker(reader)
    assert_equal ["fail", { "error" => "parked it" }], Timeout.timeout(10) { parked.pop }
  end
end
