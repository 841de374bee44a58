module Sneakers
  module Metrics
    # Logs each metric: `INC: name`, `TIME: name seconds`.
    class LoggingMetrics
      def increment(metric)
        Sneakers.logger.info("INC: #{metric}")
      end

      def timing(metric)
        start = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        yield
      ensure
        Sneakers.logger.info("TIME: #{metric} #{Process.clock_gettime(Process::CLOCK_MONOTONIC) - start}")
      end
    end
  end
end
