module Sneakers
  # What a worker's `queue` answers: its name and options (Sneakers::Queue's reader API).
  # The engine declares, binds and consumes it.
  class Queue
    attr_reader :name, :opts, :exchange

    def initialize(name, opts)
      @name = name
      @opts = opts
      @exchange = opts[:exchange]
    end
  end
end
