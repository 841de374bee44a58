module Sneakers
  module Metrics
    class NullMetrics
      def increment(metric); end

      def timing(_metric)
        yield
      end
    end
  end
end
