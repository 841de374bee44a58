require "yaml"
require "erb"

module Sneakers
  # Starts one `rake sneakers:run` per worker group of WORKER_GROUP_CONFIG (default
  # ./config/sneaker_worker_groups.yml, ERB allowed): `group: {classes: [..] or "A,B", workers: N}`.
  # TERM, USR1, HUP and USR2 are forwarded to every group.
  class Spawner
    def self.spawn
      config_file = ENV["WORKER_GROUP_CONFIG"] || "./config/sneaker_worker_groups.yml"
      unless File.exist?(config_file)
        puts "No worker group file found."
        puts "Specify via ENV 'WORKER_GROUP_CONFIG' or by convention ./config/sneaker_worker_groups.yml"
        Kernel.exit(0)
      end
      command = ENV["SNEAKERS_RAKE_COMMAND"] || (File.exist?("Gemfile") ? "bundle exec rake sneakers:run" : "rake sneakers:run")
      groups = YAML.safe_load(ERB.new(File.read(config_file)).result, aliases: true)
      pids = groups.map do |_name, group|
        classes = group["classes"]
        classes = classes.join(",") if classes.is_a?(Array)
        fork do
          Kernel.exec({ "WORKERS" => classes, "WORKER_COUNT" => group["workers"].to_s }, command)
        end
      end
      %w[TERM USR1 HUP USR2].each do |signal|
        Signal.trap(signal) { pids.each { |pid| Process.kill(signal, pid) rescue nil } }
      end
      Process.waitall
    end
  end
end
