require_relative "helper"
require "active_job"

# `queue_adapter = :sneakers` runs a job through a real queue.
class ActiveJobTest < CleatsTestCase
  DONE = Thread::Queue.new

  class HelloJob < ActiveJob::Base
    def perform(name, count)
      DONE << [name, count]
    end
  end

  def test_a_job_runs_through_a_real_queue
    ActiveJob::Base.logger = Logger.new(IO::NULL)
    ActiveJob::Base.queue_adapter = :sneakers
    q = queue("active-job")
    HelloJob.queue_as q
    wrapper = ActiveJob::QueueAdapters::SneakersAdapter::JobWrapper
    wrapper.from_queue q
    run_worker(wrapper)
    HelloJob.perform_later("world", 3)
    assert_equal ["world", 3], Timeout.timeout(10) { DONE.pop }
    assert_queue_counts(q, [0, 0])
    assert_raises(NotImplementedError) { HelloJob.set(wait: 60).perform_later("later", 1) }
  end
end
