require "serverengine"

module Sneakers
  # The ServerEngine worker module: each forked process runs every worker class on one engine
  # created here, after fork, and stops it gracefully when ServerEngine says stop.
  module WorkerGroup
    def initialize
      @stop_flag = ServerEngine::BlockingFlag.new
    end

    def before_fork
      hook = config[:hooks] && config[:hooks][:before_fork]
      hook&.call
    end

    # Ours, not ServerEngine's after_start: runs first thing in the child.
    def after_fork
      hook = config[:hooks] && config[:hooks][:after_fork]
      hook&.call
    end

    def run
      after_fork
      worker_classes = config[:worker_classes]
      worker_classes = worker_classes.call if worker_classes.respond_to?(:call)
      @workers = worker_classes.map { |w| w.new(nil, nil, connection: config[:connection]) }
      @worker_set = Cleats::WorkerSet.new(@workers).start
      until @stop_flag.wait_for_set(Sneakers::CONFIG[:amqp_heartbeat])
        Sneakers.logger.debug("Heartbeat: running threads [#{Thread.list.count}]")
        Sneakers::CONFIG[:metrics]&.increment("sneakers.heartbeat")
      end
      Sneakers.logger.debug("Stopping workers")
      drained, requeued = @worker_set.stop
      Sneakers.logger.info("Stopped workers (drained: #{drained}, requeued: #{requeued})")
    end

    def stop
      Sneakers.logger.info("Shutting down...")
      @stop_flag.set!
    end
  end
end
