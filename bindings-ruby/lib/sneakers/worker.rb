require "sneakers/worker/processing"

module Sneakers
  # The worker mixin: `from_queue name, opts` and `work(msg)` (or `work_with_params`). The
  # engine consumes, settles and retries; this module keeps Sneakers' API shape: return values,
  # middleware, content types, metrics, error reporters, publishing.
  module Worker
    include Sneakers::ErrorReporter
    include Sneakers::Worker::Processing

    # Every class that included Sneakers::Worker.
    Classes = []

    attr_reader :queue, :id, :opts

    # Builds the worker; never connects (apps unit-test with `MyWorker.new.work(payload)`).
    def initialize(queue = nil, _pool = nil, opts = {})
      opts = (opts || {}).reject { |_, v| v.nil? }
      queue_opts = self.class.queue_opts || {}
      @opts = Sneakers::CONFIG.merge(opts)
      @opts = Configuration.deep_merge(@opts, Configuration.map_deprecated(queue_opts))
      queue_name = queue.respond_to?(:name) ? queue.name : (queue || self.class.queue_name)
      @queue = Sneakers::Queue.new(queue_name, @opts)
      @should_ack = @opts[:ack]
      @content_type = @opts[:content_type]
      @content_encoding = @opts[:content_encoding]
      @id = Utils.make_worker_id(queue_name)
    end

    def ack!
      :ack
    end

    def reject!
      :reject
    end

    def requeue!
      :requeue
    end

    # Publishes on the worker's exchange: `to_queue:` or `routing_key:`, plus message options.
    def publish(msg, opts)
      to_queue = opts.delete(:to_queue)
      opts[:routing_key] ||= to_queue
      return unless opts[:routing_key]

      worker_publisher.publish(msg, opts)
    end

    def logger
      self.class.logger || Sneakers.logger
    end

    def metrics
      self.class.metrics || Sneakers::Metrics::NullMetrics.new
    end

    # Subscribes: an engine of its own for this worker, with its Ruby threads.
    def run
      @worker_set = Cleats::WorkerSet.new([self])
      @worker_set.start
      worker_trace "New worker: subscribed to the queue #{@queue.name}"
    end

    # Unsubscribes and finishes the work in progress (requeueing what is left at stop_timeout).
    def stop
      worker_trace "Stopping worker: unsubscribing."
      @worker_set&.stop
      worker_trace "Stopping worker: done."
    end

    def log_msg(msg)
      "[#{@id}][#{Thread.current}][#{@queue.name}][#{@opts.reject { |k, _| k == :amqp || Configuration::HOST_ONLY.include?(k) }}] #{msg}"
    end

    def worker_trace(msg)
      logger.debug(log_msg(msg))
    end

    def self.included(base)
      base.extend ClassMethods
      Classes << base if base.is_a?(Class)
    end

    def self.configure_logger(log = nil)
      @logger = log
    end

    def self.logger
      @logger
    end

    def self.configure_metrics(metrics = nil)
      @metrics = metrics || Sneakers::Metrics::NullMetrics.new
    end

    def self.metrics
      @metrics
    end

    module ClassMethods
      attr_reader :queue_opts, :queue_name

      def from_queue(q, opts = {})
        @queue_name = q.to_s
        @queue_opts = opts
      end

      def enqueue(msg, opts = {})
        opts = opts.dup
        opts[:routing_key] ||= Array(@queue_opts && @queue_opts[:routing_key]).first
        opts[:content_type] ||= @queue_opts && @queue_opts[:content_type]
        opts[:content_encoding] ||= @queue_opts && @queue_opts[:content_encoding]
        opts[:to_queue] ||= @queue_name
        publisher.publish(msg, opts)
      end

      def logger
        Sneakers::Worker.logger
      end

      def metrics
        Sneakers::Worker.metrics
      end

      private

      def publisher
        @publisher = nil if @publisher&.pid != Process.pid
        @publisher ||= Sneakers::Publisher.new(queue_opts || {})
      end
    end

    private

    # One publisher per worker and process (a parent's cannot be used after fork).
    def worker_publisher
      @worker_publisher = nil if @worker_publisher&.pid != Process.pid
      @worker_publisher ||= Sneakers::Publisher.new(@opts)
    end
  end
end
