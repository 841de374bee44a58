require "serverengine"
require "sneakers/workergroup"

module Sneakers
  # Runs the worker classes in `workers` processes supervised by ServerEngine: forked after the
  # app is loaded, restarted when they die. Signals to the master: TERM graceful stop, QUIT
  # immediate stop, USR1 graceful restart, HUP immediate restart, USR2 reload the configuration
  # (runner_config_file).
  class Runner
    def initialize(worker_classes, opts = {})
      @runnerconfig = RunnerConfig.new(worker_classes, opts)
    end

    def run
      @se = ServerEngine.create(nil, WorkerGroup) { @runnerconfig.reload_config! }
      @se.run
    end

    def stop(stop_graceful = true)
      @se.stop(stop_graceful)
    end
  end

  # The runner's configuration: CONFIG, the runner's options, and runner_config_file, a Ruby file
  # evaluated here (`workers 2`, `before_fork { }`, `after_fork { }`, `amqp '...'`,
  # `start_worker_delay 1`).
  class RunnerConfig
    def initialize(worker_classes, opts)
      @worker_classes = worker_classes
      @conf = opts
    end

    def method_missing(meth, *args, &block)
      if %w[before_fork after_fork].include?(meth.to_s)
        @conf[meth] = block
      elsif %w[workers start_worker_delay amqp].include?(meth.to_s)
        @conf[meth] = args.first
      else
        super
      end
    end

    def respond_to_missing?(meth, include_private = false)
      %w[before_fork after_fork workers start_worker_delay amqp].include?(meth.to_s) || super
    end

    def to_h
      @conf
    end

    def reload_config!
      Sneakers.logger.info("Loading runner configuration...")
      config_file = Sneakers::CONFIG[:runner_config_file]
      if config_file
        begin
          instance_eval(File.read(config_file), config_file)
          Sneakers.logger.info("Loading config with file: #{config_file}")
        rescue StandardError, ScriptError
          Sneakers.logger.error("Cannot load from file '#{config_file}', #{$!}")
        end
      end
      config = make_serverengine_config
      %i[before_fork after_fork].each do |hook|
        Sneakers::CONFIG[:hooks][hook] = config.delete(hook) if config[hook]
      end
      Sneakers.logger.debug("New configuration: #{config.reject { |k, _| k == :logger }.inspect}")
      config
    end

    private

    def make_serverengine_config
      config = Sneakers::CONFIG.merge(@conf)
      # ServerEngine's own logging to stdout/stderr livelocks with forked workers (Sneakers #153).
      logger = Sneakers.logger
      # ServerEngine reopens its logger on restart and reload; a plain Logger cannot.
      logger.define_singleton_method(:reopen!) { self } unless logger.respond_to?(:reopen!)
      config.merge!(logger: logger, log_level: Sneakers.logger.level, worker_type: "process",
                    worker_classes: @worker_classes, log_stdout: false, log_stderr: false)
      config.delete(:log)
      config
    end
  end
end
