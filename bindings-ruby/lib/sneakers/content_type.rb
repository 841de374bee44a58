module Sneakers
  # Registry of (de)serialisers by content type. Unknown types pass the payload through.
  class ContentType
    attr_reader :serializer, :deserializer

    def self.register(content_type: nil, serializer: nil, deserializer: nil)
      raise ArgumentError, "missing keyword: content_type" if content_type.nil?
      raise ArgumentError, "missing keyword: serializer" if serializer.nil?
      raise ArgumentError, "missing keyword: deserializer" if deserializer.nil?
      [serializer, deserializer].each do |fn|
        raise ArgumentError, "#{fn} is not a proc" unless fn.is_a?(Proc)
        raise ArgumentError, "#{fn} should accept one argument" unless fn.arity == 1
      end
      @types[content_type] = new(serializer, deserializer)
    end

    def self.serialize(payload, content_type)
      return payload unless content_type
      @types[content_type].serializer.call(payload)
    end

    def self.deserialize(payload, content_type)
      return payload unless content_type
      @types[content_type].deserializer.call(payload)
    end

    # Whether anything is registered: if not, every payload passes through unchanged.
    def self.registered?
      !@types.empty?
    end

    def self.reset!
      passthrough = ->(payload) { payload }
      @types = Hash.new(new(passthrough, passthrough))
    end

    def initialize(serializer, deserializer)
      @serializer = serializer
      @deserializer = deserializer
    end

    reset!
  end
end
