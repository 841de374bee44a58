module Sneakers
  # The gem's version (the Rust workspace's version).
  VERSION = "0.1.0".freeze
end
