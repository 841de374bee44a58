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
      options = options.dup
      to_queue = options.delete(:to_queue)
      options[:routing_key] ||= to_queue
      options[:routing_key] = Array(options[:routing_key]).first
      body = ContentType.serialize(msg, options[:content_type])
      body = ContentEncoding.encode(body, options[:content_encoding])
      Sneakers.logger.info { "publishing <#{msg}> to [#{options[:routing_key]}]" }
      native.publish(body.to_s.b, JSON.generate(Configuration.json_safe(options)))
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

    def connection_options
      Cleats::Connection.apply(@opts)
    end
  end
end
