module Sneakers
  module Metrics
    # Records into New Relic custom metrics (`Custom/<metric>`); needs the newrelic_rpm gem loaded.
    class NewrelicMetrics
      def self.eagent(eagent = nil)
        @eagent = eagent || @eagent
      end

      def initialize(*)
        # The agent object is set with NewrelicMetrics.eagent(::NewRelic) by the app.
      end

      def increment(metric)
        record_stat(metric, 1)
      end

      def record_stat(metric, num)
        metric_name = "Custom/#{metric.gsub('.', '/')}"
        agent.record_metric(metric_name, num)
      end

      def timing(metric)
        start = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        yield
      ensure
        record_stat(metric, (Process.clock_gettime(Process::CLOCK_MONOTONIC) - start) * 1000)
      end

      private

      def agent
        (self.class.eagent || ::NewRelic)::Agent
      end
    end
  end
end
