module Sneakers
  # Registry of encoders / decoders by content encoding (e.g. gzip). Unknown encodings pass through.
  class ContentEncoding
    attr_reader :encoder, :decoder

    def self.register(content_encoding: nil, encoder: nil, decoder: nil)
      raise ArgumentError, "missing keyword: content_encoding" if content_encoding.nil?
      raise ArgumentError, "missing keyword: encoder" if encoder.nil?
      raise ArgumentError, "missing keyword: decoder" if decoder.nil?
      [encoder, decoder].each do |fn|
        raise ArgumentError, "#{fn} is not a proc" unless fn.is_a?(Proc)
        raise ArgumentError, "#{fn} should accept one argument" unless fn.arity == 1
      end
      @encodings[content_encoding] = new(encoder, decoder)
    end

    def self.encode(payload, content_encoding)
      return payload unless content_encoding
      @encodings[content_encoding].encoder.call(payload)
    end

    def self.decode(payload, content_encoding)
      return payload unless content_encoding
      @encodings[content_encoding].decoder.call(payload)
    end

    # Whether anything is registered: if not, every payload passes through unchanged.
    def self.registered?
      !@encodings.empty?
    end

    def self.reset!
      passthrough = ->(payload) { payload }
      @encodings = Hash.new(new(passthrough, passthrough))
    end

    def initialize(encoder, decoder)
      @encoder = encoder
      @decoder = decoder
    end

    reset!
  end
end
