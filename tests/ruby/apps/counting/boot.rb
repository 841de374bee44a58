# A small app for the process tests: one worker that appends "<pid> <message>" to $OUT.
require "sneakers"

Sneakers.configure(amqp: ENV.fetch("AMQP_URL"), exchange: "", log: ENV.fetch("LOG"),
                   queue_options: { durable: false }, workers: 1, threads: 2, prefetch: 5,
                   start_worker_delay: 0.1, pid_path: ENV.fetch("PID_PATH"), runner_config_file: ENV["RUNNER_CONFIG"],
                   hooks: { before_fork: -> { File.write("#{ENV.fetch('OUT')}.before_fork", "x", mode: "a") },
                            after_fork: -> { File.write("#{ENV.fetch('OUT')}.forked.#{Process.pid}", "") } })

class CountingWorker
  include Sneakers::Worker
  from_queue ENV.fetch("Q")

  def work(msg)
    sleep 0.02 # slow enough that a stop finds work in progress
    File.open(ENV.fetch("OUT"), "a") do |f|
      f.flock(File::LOCK_EX)
      f.puts "#{Process.pid} #{msg}"
    end
    ack!
  end
end
