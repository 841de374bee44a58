module Sneakers
  # Bunny-style read-only views: methods and `[:key]` (symbol or string), plus `to_hash`.
  # Built from a hash, or lazily from `source.public_send(reader)` on first use (or `load!`):
  # most `work(msg)` never looks at delivery_info or metadata, so no hash is made for them.
  class PropertiesView
    def initialize(hash, source = nil, reader = nil)
      @hash = hash
      @source = source
      @reader = reader
    end

    def [](key)
      data[key.to_sym]
    end

    def to_hash
      data.dup
    end
    alias to_h to_hash

    def key?(key)
      data.key?(key.to_sym)
    end

    def each(&block)
      data.each(&block)
    end

    def inspect
      "#<#{self.class.name} #{data.inspect}>"
    end

    def method_missing(name, *args)
      return data[name] if args.empty? && data.key?(name)

      super
    end

    def respond_to_missing?(name, include_private = false)
      data.key?(name) || super
    end

    # Reads the data now: the delivery it comes from lets go of it once settled.
    def load!
      data
      self
    end

    private

    def data
      @hash ||= @source.public_send(@reader)
    end
  end

  # Bunny's DeliveryInfo: delivery_tag, routing_key, exchange, redelivered?, consumer_tag.
  class DeliveryInfo < PropertiesView
    def delivery_tag = data[:delivery_tag]
    def routing_key = data[:routing_key]
    def exchange = data[:exchange]
    def consumer_tag = data[:consumer_tag]
    def redelivered = data[:redelivered]
    alias redelivered? redelivered
  end

  # Bunny's MessageProperties: headers (string keys), content_type, ... as methods and [:key].
  class Metadata < PropertiesView
    %i[headers content_type content_encoding delivery_mode priority correlation_id reply_to
       expiration message_id timestamp type user_id app_id cluster_id].each do |key|
      define_method(key) { data[key] }
    end

    def persistent?
      data[:delivery_mode] == 2
    end
  end
end
