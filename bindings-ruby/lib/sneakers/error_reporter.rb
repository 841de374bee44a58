module Sneakers
  module ErrorReporter
    # The default reporter: logs the context, then the exception.
    class DefaultLogger
      def call(exception, _worker, context_hash)
        Sneakers.logger.warn(context_hash) unless context_hash.empty?
        Sneakers.logger.error(exception)
      end
    end

    # Calls every reporter in Sneakers.error_reporters with (exception, worker, context).
    def worker_error(exception, context_hash = {})
      Sneakers.error_reporters.each do |reporter|
        reporter.call(exception, self, context_hash)
      rescue StandardError => e
        Sneakers.logger.error("error reporter #{reporter.inspect} failed: #{e.class}: #{e.message}")
      end
    end
  end
end
