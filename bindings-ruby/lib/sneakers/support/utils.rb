module Sneakers
  module Utils
    # "A,B" -> [[A, B], missing_names]: the constants that exist, and the names that do not.
    def self.parse_workers(workerstring)
      missing_workers = []
      workers = (workerstring || "").split(",").map(&:strip).reject(&:empty?).map do |name|
        Object.const_get(name)
      rescue NameError
        missing_workers << name
        nil
      end.compact
      [workers, missing_workers]
    end

    def self.make_worker_id(namespace)
      "worker-#{namespace}:1:#{rand(36**6).floor.to_s(36)}"
    end
  end
end
