module Sneakers
  # Bunny-style read-only views: methods and `[:key]` (symbol or string), plus `to_hash`.
  class PropertiesView
    def initialize(hash)
      @hash = hash
    end

    def [](key)
      @hash[key.to_sym]
    end

    def to_hash
      @hash.dup
    end
    alias to_h to_hash

    def key?(key)
      @hash.key?(key.to_sym)
    end

    def each(&block)
      @hash.each(&block)
    end

    def inspect
      "#<#{self.class.name} #{@hash.inspect}>"
    end

    def method_missing(name, *args)
      return @hash[name] if args.empty? && @hash.key?(name)

      super
    end

    def respond_to_missing?(name, include_private = false)
      @hash.key?(name) || super
    end
  end

  # Bunny's DeliveryInfo: delivery_tag, routing_key, exchange, redelivered?, consumer_tag.
  class DeliveryInfo < PropertiesView
    def delivery_tag = @hash[:delivery_tag]
    def routing_key = @hash[:routing_key]
    def exchange = @hash[:exchange]
    def consumer_tag = @hash[:consumer_tag]
    def redelivered = @hash[:redelivered]
    alias redelivered? redelivered
  end

  # Bunny's MessageProperties: headers (string keys), content_type, ... as methods and [:key].
  class Metadata < PropertiesView
    %i[headers content_type content_encoding delivery_mode priority correlation_id reply_to
       expiration message_id timestamp type user_id app_id cluster_id].each do |key|
      define_method(key) { @hash[key] }
    end

    def persistent?
      @hash[:delivery_mode] == 2
    end
  end
end
