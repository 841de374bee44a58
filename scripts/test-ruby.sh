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

out="$CLEATS_ROOT/target/ruby"
export GEM_HOME="$out/gems"
mkdir -p "$out"

say "gem build cleats.gemspec"
gem build --silent cleats.gemspec --output "$out/cleats.gem"

# A gem whose content did not change is not reinstalled (the extension build takes a while).
sum="$(sha256sum "$out/cleats.gem" | cut -d' ' -f1)"
if [ "$(cat "$out/installed.sha256" 2>/dev/null)" != "$sum" ] || [ ! -d "$GEM_HOME/gems" ]; then
  say "gem install (GEM_HOME=${GEM_HOME#"$CLEATS_ROOT"/}; the extension compiles with cargo)"
  rm -f "$out/installed.sha256"
  # The cargo build directory is kept between runs so that a reinstall rebuilds only what changed.
  CARGO_TARGET_DIR="$out/gem-build" gem install --local --no-document "$out/cleats.gem"
  echo "$sum" >"$out/installed.sha256"
else
  say "gem install: unchanged since the last install"
fi

say "ruby -e 'require \"sneakers\"' with the installed gem"
ruby -e 'require "sneakers"; so = $LOADED_FEATURES.grep(/cleats_ext/).first
         abort "cleats_ext not loaded from GEM_HOME: #{so.inspect}" unless so&.start_with?(ENV["GEM_HOME"])
         puts "loaded #{so}"'

say "ruby tests (minitest, tests/ruby/test_*.rb)"
ruby -e 'files = ARGV.take_while { |a| a != "--" }; ARGV.replace(ARGV.drop(files.size + 1))
         files.each { |f| require f }' "$CLEATS_ROOT"/tests/ruby/test_*.rb -- "$@"
