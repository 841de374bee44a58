module Sneakers
  # Publishes on the configured exchange through the engine's publisher (confirmed; connects on
  # first publish; safe to share between threads). `to_queue` becomes the routing key;
  # content_type / content_encoding pick the registered serialiser / encoder; other options are
  # Bunny's message properties.
  class Publisher
    attr_reader :pid

    def initialize(opts = {})
      @opts = Sneakers::CONFIG.merge(opts)
      @mutex = Mutex.new
      @pid = Process.pid
    end

    def publish(msg, options = {})
      options = publish_options(options)
      Sneakers.logger.info { "publishing <#{msg}> to [#{options[:routing_key]}]" }
      native.publish(body_of(msg, options), JSON.generate(Configuration.json_safe(options)))
    end

    # cleats' addition: publishes every message of `msgs` with the same options, then waits once
    # for all the broker's confirms, far faster than `publish` in a loop (which waits for each
    # confirm in turn). Raises the first failure after every message was attempted.
    def publish_batch(msgs, options = {})
      options = publish_options(options)
      bodies = msgs.map { |msg| body_of(msg, options) }
      Sneakers.logger.info { "publishing #{bodies.size} messages to [#{options[:routing_key]}]" }
      native.publish_batch(bodies, JSON.generate(Configuration.json_safe(options)))
    end

    # Sneakers' name for the underlying session; here the engine's publisher.
    def native
      @mutex.synchronize do
        if @native.nil? || @pid != Process.pid
          # A publisher of the parent process cannot be used after fork: make a new one.
          @pid = Process.pid
          Cleats::EngineLog.ensure_forwarding
          @native = Cleats::Native::Publisher.new(JSON.generate(Configuration.engine_layer(connection_options)))
        end
        @native
      end
    end

    def close
      @native&.close
    end

    private

    def publish_options(options)
      options = options.dup
      to_queue = options.delete(:to_queue)
      options[:routing_key] ||= to_queue
      options[:routing_key] = Array(options[:routing_key]).first
      options
    end

    def body_of(msg, options)
      body = ContentType.serialize(msg, options[:content_type])
      ContentEncoding.encode(body, options[:content_encoding]).to_s.b
    end

    def connection_options
      Cleats::Connection.apply(@opts)
    end
  end
end
