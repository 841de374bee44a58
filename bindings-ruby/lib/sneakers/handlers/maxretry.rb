module Sneakers
  module Handlers
    # Sneakers' Maxretry, run by the engine: for queue Q it declares the Q-retry, Q-error and
    # Q-retry-requeue exchanges, the Q-retry queue (TTL retry_timeout, default 60000 ms) and the
    # Q-error queue; a rejected or failed message is retried up to retry_max_times (default 5),
    # then published to Q-error with a `retry_info` header and acked. Options: retry_timeout,
    # retry_max_times, retry_exchange, retry_error_exchange, retry_requeue_exchange,
    # retry_routing_key, retry_queue_arguments.
    class Maxretry
      def initialize(channel, queue, opts)
        @channel = channel
        @queue = queue
        @opts = opts
      end

      # The engine adds x-dead-letter-exchange itself; shown here for apps that call it.
      def self.configure_queue(name, opts)
        retry_name = opts.fetch(:retry_exchange, "#{name}-retry")
        queue_opts = opts.fetch(:queue_options, {})
        args = (queue_opts[:arguments] || {}).merge(:"x-dead-letter-exchange" => retry_name)
        queue_opts.merge(arguments: args)
      end

      # The engine settles Maxretry workers itself; these exist for code that calls them.
      %i[acknowledge reject error noop].each do |name|
        define_method(name) do |*|
          raise NotImplementedError, "Sneakers::Handlers::Maxretry is applied by the cleats engine"
        end
      end
    end
  end
end
