require "cleats/handler_channel"

module Cleats
  # The engine of this process with its workers, and the Ruby threads that pull deliveries from
  # its pools: each thread loops Pool#next (GVL released, 100 ms at most) -> work -> settle until
  # the engine stops. Created after fork, in the process that runs the workers.
  class WorkerSet
    PULL_TIMEOUT = 0.1
    # Frozen once: a literal hash here would be allocated for every message.
    DEFER_INTERRUPTS = { Object => :never }.freeze
    TAKE_INTERRUPTS = { Object => :immediate }.freeze

    attr_reader :workers, :engine

    def initialize(workers)
      @workers = workers
      @threads = []
    end

    def start
      EngineLog.ensure_forwarding
      global = Cleats::Connection.apply(Sneakers::CONFIG.to_hash)
      @engine = Native::Engine.new(JSON.generate(Sneakers::Configuration.engine_layer(global)))
      @by_name = {}
      @workers.each { |worker| add(worker) }
      @engine.start
      @threads = @engine.pools.flat_map do |pool|
        Array.new(pool.threads) { |i| start_thread(pool, i) }
      end
      self
    end

    # Graceful stop: the engine cancels the consumers and waits for work in progress (the
    # threads finish it), then the threads leave their loops. `[drained, requeued]`.
    def stop(timeout = nil)
      return unless @engine

      report = @engine.stop(timeout)
      @threads.each(&:join)
      report
    end

    private

    def add(worker)
      name = worker.class.name || "Worker#{worker.object_id}"
      opts = Cleats::Connection.apply(worker.opts)
      handler_class = opts[:handler] || Sneakers::Handlers::Oneshot
      custom = Sneakers::Configuration.handler_name(handler_class) == "custom"
      if custom && handler_class.respond_to?(:configure_queue)
        opts = opts.merge(queue_options: handler_class.configure_queue(worker.queue.name, opts))
      end
      layer = Sneakers::Configuration.engine_layer(opts)
      native = @engine.add_worker(name, worker.queue.name, JSON.generate(layer))
      handler = build_handler(handler_class, native, worker, opts)
      worker.custom_handler = custom
      worker.attach_engine(native, handler)
      @by_name[native.name] = worker
    end

    # Sneakers builds the handler per queue as `new(channel, queue, opts)`. Custom handlers get
    # a Bunny-style facade whose operations go to the engine.
    def build_handler(handler_class, native, worker, opts)
      channel = HandlerChannel.new(native, opts)
      queue = HandlerQueue.new(worker.queue.name, channel)
      handler_class.new(channel, queue, opts)
    end

    # Interrupts (Thread#kill, Thread#raise, Timeout) are let in anywhere in the loop (inside
    # `work` too), and a delivery is never dropped unsettled: `process_delivery` settles what it
    # was handed, and an interrupt that ends the loop before or while it does finds the delivery
    # in `held`, where Pool#next puts it before returning it, and the ensure (where interrupts
    # wait) puts it back on its queue. One mask for the thread's life, not one per message:
    # `handle_interrupt` allocates its mask each time.
    def start_thread(pool, index)
      # A pool of one worker (no share_threads) needs no lookup per message.
      names = pool.worker_names
      only = @by_name.fetch(names.first) if names.size == 1
      Thread.new do
        Thread.current.name = "cleats-work-#{index}"
        held = []
        Thread.handle_interrupt(DEFER_INTERRUPTS) do
          Thread.handle_interrupt(TAKE_INTERRUPTS) { pull(pool, only, held) }
        ensure
          delivery = held[0]
          delivery.settle(:requeue, nil, nil, nil) if delivery && !delivery.settled?
        end
      end
    end

    def pull(pool, only, held)
      loop do
        delivery = pool.next(PULL_TIMEOUT, held)
        break if delivery.nil?
        next if delivery == :timeout

        (only || @by_name.fetch(delivery.worker_name)).process_delivery(delivery)
      end
    end
  end
end
