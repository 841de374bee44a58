# The cleats gem: a drop-in replacement for Sneakers on the cleats engine (Rust). Its native
# extension is compiled by cargo at install time (bindings-ruby/ext/cleats/extconf.rb), so the gem
# carries the Rust workspace: the root manifest and lock file, core/, bindings-ruby/, and the
# manifest of every other workspace member (cargo refuses a workspace with a missing member).
version = File.read(File.join(__dir__, "Cargo.toml"))[/^version\s*=\s*"([^"]+)"/, 1]

Gem::Specification.new do |s|
  s.name = "cleats"
  s.version = version
  s.summary = "RabbitMQ workers for Ruby on a Rust engine; a drop-in replacement for Sneakers"
  s.description = "Sneakers' API (workers, handlers, runner, CLI, rake task, ActiveJob adapter) " \
                  "with consuming, acking, retries and publishing done by the cleats engine."
  s.authors = ["cleats"]
  s.license = "MIT"
  s.required_ruby_version = ">= 3.0"

  files = %w[Cargo.toml Cargo.lock cleats.gemspec Rakefile
             bindings-python/Cargo.toml bindings-python/src/lib.rs]
  # Targets core's manifest declares outside core/ (examples, benches): cargo checks they exist.
  core_manifest = File.read(File.join(__dir__, "core", "Cargo.toml"))
  files += core_manifest.scan(/^path\s*=\s*"\.\.\/([^"]+)"/).flatten
  files += Dir.chdir(__dir__) do
    Dir.glob(%w[core/Cargo.toml core/src/**/* core/tests/**/* bindings-ruby/**/*])
       .reject { |f| File.directory?(f) || f.end_with?(".so", ".o") || File.basename(f) == "Makefile" }
  end
  s.files = files
  s.require_paths = ["bindings-ruby/lib"]
  s.bindir = "bindings-ruby/bin"
  s.executables = ["sneakers"]
  s.extensions = ["bindings-ruby/ext/cleats/extconf.rb"]

  # Debian packages these (ruby-serverengine): RubyGems.org is not needed.
  s.add_runtime_dependency "serverengine", ">= 2.0"
end
