require "sneakers"
require "sneakers/runner"
require "rake"

task :environment

namespace :sneakers do
  desc "Start work (set $WORKERS=Klass1,Klass2 and $WORKER_COUNT=N)"
  task :run do
    Sneakers.server = true
    Rake::Task["environment"].invoke
    if defined?(::Rails) && ::Rails.respond_to?(:application) && ::Rails.application
      if defined?(::Zeitwerk) && ::Rails.respond_to?(:autoloaders) && ::Rails.autoloaders.zeitwerk_enabled?
        ::Zeitwerk::Loader.eager_load_all
      else
        ::Rails.application.eager_load!
      end
    end

    missing = []
    workers = if ENV["WORKERS"]
                found, missing = Sneakers::Utils.parse_workers(ENV["WORKERS"])
                found
              elsif Sneakers.rake_worker_classes
                classes = Sneakers.rake_worker_classes
                classes.respond_to?(:call) ? classes.call : classes
              else
                Sneakers::Worker::Classes
              end

    unless missing.empty?
      warn "Missing workers: #{missing.join(', ')}"
      warn "Did you `require` properly?"
      exit(1)
    end
    if workers.empty?
      warn <<~MSG
        Error: No workers found.
        Please set the classes of the workers you want to run like so:

          $ export WORKERS=MyWorker,FooWorker
          $ rake sneakers:run
      MSG
      exit(1)
    end
    opts = ENV["WORKER_COUNT"] ? { workers: ENV["WORKER_COUNT"].to_i } : {}
    Sneakers::Runner.new(workers, opts).run
  end
end
