module Cleats
  # Forwards the engine's log lines to Sneakers.logger. The engine queues them (no Rust thread
  # calls Ruby); one Ruby thread per process pulls them with the GVL released. Started on first
  # use of an engine or publisher, and again in a forked child (threads do not survive fork).
  module EngineLog
    LEVELS = { "ERROR" => :error, "WARN" => :warn, "INFO" => :info, "DEBUG" => :debug, "TRACE" => :debug }.freeze

    def self.install
      Cleats::Native.install_logging(ENV.fetch("CLEATS_ENGINE_LOG", "info"))
    end

    def self.ensure_forwarding
      return if @pid == Process.pid && @thread&.alive?

      @pid = Process.pid
      @thread = Thread.new do
        Thread.current.name = "cleats-engine-log"
        loop do
          record = Cleats::Native.next_log_record(0.1)
          next unless record

          level, _target, message = record
          begin
            Sneakers.logger.public_send(LEVELS.fetch(level, :info), "[engine] #{message}")
          rescue StandardError
            nil # a broken logger must not end the forwarding
          end
        end
      end
    end

    install
  end
end
