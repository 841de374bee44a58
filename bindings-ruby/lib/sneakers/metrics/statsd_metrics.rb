module Sneakers
  module Metrics
    # Forwards to a statsd client (`increment`, `time`).
    class StatsdMetrics
      def initialize(conn)
        @connection = conn
      end

      def increment(metric)
        @connection.increment(metric)
      end

      def timing(metric, &block)
        @connection.time(metric, &block)
      end
    end
  end
end
