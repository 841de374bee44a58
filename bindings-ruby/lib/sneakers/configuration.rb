require "json"
require "forwardable"
require "cleats/native"

module Sneakers
  # Sneakers::CONFIG: the defaults (defined once, by the engine: cleats_core::config::defaults)
  # with the configured hashes merged deeply over them. Values the engine names and Ruby owns
  # (handler class, error reporters, log device) are resolved to Ruby objects here.
  class Configuration
    extend Forwardable
    def_delegators :@hash, :to_hash, :to_h, :[], :[]=, :fetch, :delete, :key?, :has_key?,
                   :keys, :each, :dig, :==

    # Deprecated top-level keys and where they go: the engine's table, mapped here because the
    # configuration also holds Ruby objects.
    DEPRECATED = Cleats::Native.deprecated_options.to_h do |old, targets|
      [old.to_sym, targets.map { |t| t.split(".").map(&:to_sym) }]
    end.freeze

    # Options whose values are Ruby objects: never sent to the engine as they are.
    HOST_ONLY = %i[handler metrics error_reporters hooks log connection runner_config_file
                   worker_classes logger].freeze

    def self.defaults
      d = deep_symbolize(JSON.parse(Cleats::Native.defaults_json))
      d[:exchange_options][:type] = d[:exchange_options][:type].to_sym
      d[:handler] = Sneakers::Handlers::Oneshot
      d[:error_reporters] = [Sneakers::ErrorReporter::DefaultLogger.new]
      d[:log] = $stdout
      d[:vhost] = vhost_of(d[:amqp])
      d
    end

    # Sneakers' rule: the vhost comes from the amqp URI (the first one of a list), else "/".
    def self.vhost_of(amqp)
      first = Array(amqp).first
      first ? Cleats::Native.vhost_of(first.to_s) : "/"
    end

    def self.deep_symbolize(value)
      case value
      when Hash then value.each_with_object({}) { |(k, v), h| h[k.to_sym] = deep_symbolize(v) }
      when Array then value.map { |v| deep_symbolize(v) }
      else value
      end
    end

    def self.deep_merge(base, over)
      base.merge(over) do |_key, old, new|
        old.is_a?(Hash) && new.is_a?(Hash) ? deep_merge(old, new) : new
      end
    end

    def self.map_deprecated(hash)
      hash = hash.dup
      DEPRECATED.each do |old, targets|
        next unless hash.key?(old)
        value = hash.delete(old)
        targets.each do |parent, child|
          hash[parent] = (hash[parent] || {}).merge(child => value)
        end
      end
      hash
    end

    # A copy of `hash` the engine can read (JSON): host objects dropped, the handler class
    # reduced to the engine's handler name.
    def self.engine_layer(hash)
      known = Cleats::Native.known_options
      layer = hash.select { |k, _| known.include?(k.to_s) && !HOST_ONLY.include?(k.to_sym) }
      layer = json_safe(layer)
      layer["handler"] = handler_name(hash[:handler]) if hash.key?(:handler)
      layer
    end

    def self.handler_name(handler)
      case handler
      when nil then nil
      when Class
        if handler == Sneakers::Handlers::Oneshot then "oneshot"
        elsif handler <= Sneakers::Handlers::Maxretry then "maxretry"
        else "custom"
        end
      else handler.to_s
      end
    end

    def self.json_safe(value)
      case value
      when Hash
        value.each_with_object({}) do |(k, v), h|
          safe = json_safe(v)
          h[k.to_s] = safe unless safe.equal?(UNSAFE)
        end
      when Array then value.map { |v| json_safe(v) }.reject { |v| v.equal?(UNSAFE) }
      when String, Numeric, true, false, nil then value
      when Symbol then value.to_s
      when Time then value.to_i
      else UNSAFE
      end
    end
    UNSAFE = Object.new.freeze

    def initialize
      clear
    end

    def clear
      @hash = self.class.defaults
    end

    # Merges `hash` deeply over the configuration (deprecated keys mapped first).
    def merge!(hash)
      hash = self.class.map_deprecated(self.class.deep_symbolize_keys(hash))
      warn_unknown(hash.keys)
      # As Sneakers: a new amqp URI without a vhost brings its own vhost; a ready connection
      # object brings both (see Cleats::Connection).
      if hash[:connection].nil? && hash[:vhost].nil? && hash.key?(:amqp)
        hash[:vhost] = self.class.vhost_of(hash[:amqp])
      end
      @hash = self.class.deep_merge(@hash, hash)
      self
    end

    # A plain hash: the configuration with `hash` merged over it (the configuration is unchanged).
    def merge(hash)
      self.class.deep_merge(@hash, self.class.map_deprecated(self.class.deep_symbolize_keys(hash)))
    end

    def self.deep_symbolize_keys(hash)
      (hash || {}).each_with_object({}) { |(k, v), h| h[k.to_sym] = v }
    end

    def inspect_with_redaction
      shown = @hash.dup
      redacted = JSON.parse(Cleats::Native.redacted_json(JSON.generate("amqp" => self.class.json_safe(@hash[:amqp]))))
      shown[:amqp] = redacted["amqp"] if @hash.key?(:amqp)
      shown.inspect
    end
    alias inspect inspect_with_redaction
    alias to_s inspect_with_redaction

    # The engine-facing global layer.
    def engine_layer
      self.class.engine_layer(@hash)
    end

    def warn_unknown(keys)
      known = Cleats::Native.known_options
      keys.map(&:to_s).reject { |k| known.include?(k) }.each do |key|
        Sneakers.logger.warn(Configuration.unknown_option_message(key))
      end
    end

    def self.unknown_option_message(key)
      closest = Cleats::Native.closest_option(key.to_s)
      hint = closest ? "; did you mean `#{closest}`?" : ""
      "unknown option `#{key}` (kept, but cleats does not use it)#{hint}"
    end
  end

  # `Sneakers.configure { |c| c.amqp = ...; c.heartbeat = 2 }`: a setter (and reader) for every
  # option; an unknown one warns with the closest real option.
  class ConfigurationBuilder
    def initialize
      @values = {}
    end

    attr_reader :values

    Cleats::Native.known_options.each do |name|
      define_method("#{name}=") { |value| @values[name.to_sym] = value }
      define_method(name) { @values.fetch(name.to_sym) { Sneakers::CONFIG[name.to_sym] } }
    end

    def method_missing(name, *args)
      key = name.to_s
      return super unless key.end_with?("=") && args.size == 1

      # Configuration#merge! warns about it, naming the closest real option.
      @values[key.chomp("=").to_sym] = args.first
    end

    def respond_to_missing?(name, include_private = false)
      name.to_s.end_with?("=") || super
    end
  end
end
