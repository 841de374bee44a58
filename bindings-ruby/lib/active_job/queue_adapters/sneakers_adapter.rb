require "sneakers"
require "monitor"
require "active_support/json"

module ActiveJob
  module QueueAdapters
    # `config.active_job.queue_adapter = :sneakers`: jobs are published as JSON to the job's
    # queue and JobWrapper (a Sneakers worker) executes them. Scheduled jobs are not supported.
    class SneakersAdapter
      def initialize
        @monitor = Monitor.new
      end

      def enqueue(job)
        @monitor.synchronize do
          JobWrapper.from_queue job.queue_name
          JobWrapper.enqueue ActiveSupport::JSON.encode(job.serialize)
        end
      end

      def enqueue_at(_job, _timestamp)
        raise NotImplementedError, "This queueing backend does not support scheduling jobs. " \
                                   "To see what features are supported go to http://api.rubyonrails.org/classes/ActiveJob/QueueAdapters.html"
      end

      class JobWrapper
        include Sneakers::Worker
        from_queue "default"

        def work(msg)
          job_data = ActiveSupport::JSON.decode(msg)
          Base.execute job_data
          ack!
        end
      end
    end
  end
end
