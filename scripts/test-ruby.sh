#!/usr/bin/env bash
# Runs the Ruby gem's tests: builds the gem (cleats.gemspec), installs it into a throwaway
# GEM_HOME under target/ruby (its extension compiled by cargo through extconf.rb, as a user's
# `gem install` does), checks that `require "sneakers"` loads it, then runs every
# tests/ruby/test_*.rb against the installed gem and the RabbitMQ at $AMQP_URL.
# Arguments go to minitest: `scripts/test-ruby.sh -n /maxretry/` runs only the matching tests.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bash "$CLEATS_ROOT/scripts/setup.sh"
cleats_env
cd "$CLEATS_ROOT"

install_ruby_gem

say "ruby -e 'require \"sneakers\"' with the installed gem"
ruby -e 'require "sneakers"; so = $LOADED_FEATURES.grep(/cleats_ext/).first
         abort "cleats_ext not loaded from GEM_HOME: #{so.inspect}" unless so&.start_with?(ENV["GEM_HOME"])
         puts "loaded #{so}"'

say "ruby tests (minitest, tests/ruby/test_*.rb)"
ruby -e 'files = ARGV.take_while { |a| a != "--" }; ARGV.replace(ARGV.drop(files.size + 1))
         files.each { |f| require f }' "$CLEATS_ROOT"/tests/ruby/test_*.rb -- "$@"
