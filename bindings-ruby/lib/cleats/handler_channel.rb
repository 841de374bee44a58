module Cleats
  # The Bunny-style channel a custom handler is given. Its operations go to the engine:
  # acknowledge / reject / nack -> Worker#apply (the delivery tag carries the connection
  # generation, so a tag of a lost connection is ignored), exchange / queue / bind ->
  # Worker#declare (declared again after every reconnection), publish -> the engine's publisher.
  class HandlerChannel
    def initialize(native_worker, opts)
      @native = native_worker
      @opts = opts
    end

    def acknowledge(delivery_tag, multiple = false)
      @native.apply("ack", delivery_tag, multiple, false)
    end
    alias ack acknowledge

    def reject(delivery_tag, requeue = false)
      @native.apply("reject", delivery_tag, false, requeue)
    end

    def nack(delivery_tag, multiple = false, requeue = false)
      @native.apply("nack", delivery_tag, multiple, requeue)
    end

    def exchange(name, opts = {})
      @native.declare_exchange(name.to_s, JSON.generate(Sneakers::Configuration.json_safe(opts)))
      HandlerExchange.new(name.to_s, self)
    end

    %i[direct topic fanout headers].each do |type|
      define_method(type) { |name, opts = {}| exchange(name, opts.merge(type: type)) }
    end

    def default_exchange
      HandlerExchange.new("", self)
    end

    def queue(name, opts = {})
      @native.declare_queue(name.to_s, JSON.generate(Sneakers::Configuration.json_safe(opts)))
      HandlerQueue.new(name.to_s, self)
    end

    def bind_queue(queue, exchange, opts)
      args = Sneakers::Configuration.json_safe(opts[:arguments] || {})
      @native.bind(queue, exchange, (opts[:routing_key] || "").to_s, JSON.generate(args))
    end

    def publisher
      @publisher = nil if @publisher&.pid != Process.pid
      @publisher ||= Sneakers::Publisher.new(@opts)
    end

    def prefetch(_count); end

    def open?
      true
    end
  end

  # Bunny's Queue, as far as handlers use it.
  class HandlerQueue
    attr_reader :name

    def initialize(name, channel)
      @name = name
      @channel = channel
    end

    def bind(exchange, opts = {})
      @channel.bind_queue(@name, exchange.respond_to?(:name) ? exchange.name : exchange.to_s, opts)
      self
    end
  end

  # Bunny's Exchange, as far as handlers use it: publish(payload, routing_key:, headers:, ...).
  class HandlerExchange
    attr_reader :name

    def initialize(name, channel)
      @name = name
      @channel = channel
    end

    def publish(payload, opts = {})
      @channel.publisher.publish(payload.to_s, opts.merge(exchange: @name))
      self
    end
  end
end
