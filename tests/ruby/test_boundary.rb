require_relative "helper"

# The Ruby/engine boundary: waits with the GVL released stay interruptible, a long `work` does
# not starve the connection, shared pools, and the engine's log lines reach Sneakers.logger.
class BoundaryTest < CleatsTestCase
  def test_pulling_threads_answer_thread_kill_and_timeout
    q = queue("interrupts")
    klass = worker_class(q) { define_method(:work) { |_m| ack! } }
    w = run_worker(klass)
    pool = w.instance_variable_get(:@native_worker).pool
    puller = Thread.new { loop { pool.next(0.1, []) } }
    sleep 0.3
    puller.kill
    assert puller.join(5), "Thread#kill did not end a thread waiting in Pool#next"
    assert_raises(Timeout::Error) { Timeout.timeout(0.3) { loop { pool.next(0.1, []) } } }
    ticks = 0
    other = Thread.new { 20.times { ticks += 1; sleep 0.01 } }
    pool.next(0.1, []) # other Ruby threads run while this one waits
    other.join
    assert_equal 20, ticks
    threads = w.instance_variable_get(:@worker_set).instance_variable_get(:@threads)
    threads.first.kill
    assert threads.first.join(5), "Thread#kill did not end an idle work thread"
  end

  def test_long_work_keeps_the_connection_alive
    Sneakers.configure(heartbeat: 1)
    q = queue("long-work")
    seen = Thread::Queue.new
    klass = worker_class(q) do
      define_method(:work_with_params) do |m, info, _|
        seen << [m, info.redelivered?]
        sleep 4 # several heartbeat intervals with this thread busy in Ruby
        ack!
      end
    end
    run_worker(klass)
    Sneakers.publish("slow", to_queue: q)
    assert_equal ["slow", false], Timeout.timeout(10) { seen.pop }
    assert_queue_counts(q, [0, 0], 15)
    sleep 0.5
    assert seen.empty?, "the message was delivered again: the connection was lost during work"
    refute_match(/connection.*lost|reconnecting/i, @log.string)
  end

  def test_share_threads_runs_several_workers_on_one_pool
    Sneakers.configure(share_threads: true, threads: 3)
    q1 = queue("shared-1")
    q2 = queue("shared-2")
    seen = Thread::Queue.new
    a = worker_class(q1) { define_method(:work) { |m| seen << [:a, m]; ack! } }
    b = worker_class(q2) { define_method(:work) { |m| seen << [:b, m]; ack! } }
    set = Cleats::WorkerSet.new([a.new, b.new]).start
    assert_equal 1, set.engine.pools.size
    Sneakers.publish("1", to_queue: q1)
    Sneakers.publish("2", to_queue: q2)
    assert_equal [[:a, "1"], [:b, "2"]], Array.new(2) { Timeout.timeout(10) { seen.pop } }.sort
    drained, requeued = set.stop
    assert drained
    assert_equal 0, requeued
  end

  def test_engine_log_lines_reach_the_sneakers_logger
    q = queue("engine-log")
    run_worker(worker_class(q) { define_method(:work) { |_m| ack! } })
    wait_until(5, "the engine's connected line in Sneakers.logger") { @log.string.include?("[engine] connected to") }
    refute_includes @log.string, "guest:guest@"
  end

  def test_work_killed_midway_puts_the_message_back
    q = queue("killed")
    started = Thread::Queue.new
    klass = worker_class(q) do
      define_method(:work_with_params) do |m, info, _|
        started << [Thread.current, info.redelivered?]
        sleep unless info.redelivered? # the first attempt hangs until killed
        m && ack!
      end
    end
    run_worker(klass)
    Sneakers.publish("hang", to_queue: q)
    thread, redelivered = Timeout.timeout(10) { started.pop }
    refute redelivered
    thread.kill
    _, redelivered = Timeout.timeout(10) { started.pop }
    assert redelivered, "the interrupted message was requeued and delivered again"
    assert_queue_counts(q, [0, 0])
  end

  def test_an_interrupt_before_work_puts_the_delivery_back
    q = queue("interrupted-early")
    seen = Thread::Queue.new
    klass = worker_class(q) do
      define_method(:work_with_params) do |_m, info, _|
        seen << info.redelivered?
        ack!
      end
    end
    interrupted = []
    klass.prepend(Module.new do
      define_method(:process_delivery) do |delivery|
        # As if Thread#kill reached the thread after Pool#next returned, before any settling
        # code ran: only the work thread's ensure, through `held`, can still put it back.
        if interrupted.empty?
          interrupted << delivery
          Thread.current.kill
        end
        super(delivery)
      end
    end)
    w = run_worker(klass)
    Sneakers.publish("early", to_queue: q)
    assert Timeout.timeout(10) { seen.pop }, "the interrupted delivery came back redelivered"
    assert_equal 1, interrupted.size
    assert interrupted.first.settled?
    assert_queue_counts(q, [0, 0])
    pool = w.instance_variable_get(:@native_worker).pool
    assert_raises(Cleats::StateError) { pool.next(0.1, [].freeze) }
  end

  def test_a_publish_waiting_for_an_absent_broker_answers_timeout
    Sneakers.configure(amqp: "amqp://guest:guest@127.0.0.1:1", publish_timeout: 30)
    publisher = Sneakers::Publisher.new
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    assert_raises(Timeout::Error) { Timeout.timeout(0.5) { publisher.publish("x", to_queue: "nowhere") } }
    waited = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
    # Not a speed check: without interrupt checks the publish would hold the thread for its
    # whole publish_timeout (30 s) before Timeout could act.
    assert_operator waited, :<, 10
  end
end
