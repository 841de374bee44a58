# Sneakers' API on the cleats engine: `require "sneakers"` loads all of it.
require "logger"
require "json"
require "cleats/native"
require "sneakers/version"
require "sneakers/errors"
require "sneakers/support/production_formatter"
require "sneakers/support/utils"
require "sneakers/content_type"
require "sneakers/content_encoding"
require "sneakers/middleware/config"
require "sneakers/error_reporter"
require "sneakers/metrics/null_metrics"
require "sneakers/handlers/oneshot"
require "sneakers/handlers/maxretry"
require "sneakers/configuration"
require "uri"
require "cleats/engine_log"
require "cleats/connection"

module Sneakers
  CONFIG = Configuration.new

  class << self
    attr_writer :rake_worker_classes

    # Merges `opts` deeply over the configuration; with a block, yields a builder with a setter
    # for every option (`c.amqp = ...`), merged after the hash.
    def configure(opts = {})
      if block_given?
        builder = ConfigurationBuilder.new
        yield builder
        opts = opts.merge(builder.values)
      end
      CONFIG.merge!(opts)
      setup_general_logger!
      setup_worker_concerns!
      @publisher = nil
      @configured = true
    end

    def clear!
      CONFIG.clear
      @logger = nil
      @publisher = nil
      @configured = false
    end

    def configured?
      @configured ? true : false
    end

    def daemonize!(loglevel = Logger::INFO)
      CONFIG[:log] = "sneakers.log"
      CONFIG[:daemonize] = true
      setup_general_logger!
      logger.level = loglevel
    end

    def logger
      @logger ||= build_logger
    end

    def logger=(logger)
      @logger = logger
    end

    def publish(msg, opts)
      @publisher = nil if @publisher&.pid != Process.pid
      @publisher ||= Sneakers::Publisher.new
      @publisher.publish(msg, opts)
    end

    def server=(server)
      @server = server
    end

    def server?
      @server ? true : false
    end

    def configure_server
      yield self if server?
    end

    def error_reporters
      CONFIG[:error_reporters]
    end

    def middleware
      Sneakers::Middleware::Config
    end

    # Worker classes for `rake sneakers:run` when $WORKERS is not set: an array or a callable.
    def rake_worker_classes
      @rake_worker_classes
    end

    private

    def setup_general_logger!
      @logger = build_logger
    end

    # A Logger-like object is used as is; a path or an IO gets a ServerEngine::DaemonLogger
    # (rotation, and `reopen!`, which ServerEngine calls on restart and reload).
    def build_logger
      log = CONFIG[:log]
      return log if %i[info debug error warn].all? { |m| log.respond_to?(m) }

      require "serverengine"
      device = log == "STDOUT" ? $stdout : log
      logger = ServerEngine::DaemonLogger.new(device, log_rotate_age: CONFIG[:log_rotate_age],
                                                      log_rotate_size: CONFIG[:log_rotate_size],
                                                      log_level: CONFIG[:log_level].to_s)
      logger.formatter = Sneakers::Support::ProductionFormatter
      logger
    end

    def setup_worker_concerns!
      Worker.configure_logger(logger)
      Worker.configure_metrics(CONFIG[:metrics])
    end
  end
end

require "sneakers/queue"
require "sneakers/delivery_info"
require "sneakers/publisher"
require "sneakers/worker"
require "cleats/worker_set"
require "sneakers/workergroup"
require "sneakers/runner"
