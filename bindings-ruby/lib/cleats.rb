# `require "cleats"` is the same as `require "sneakers"`: the gem is Sneakers' API on the cleats engine.
require "sneakers"
