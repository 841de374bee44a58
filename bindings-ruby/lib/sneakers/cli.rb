require "optparse"
require "sneakers"
require "sneakers/runner"

module Sneakers
  # `sneakers work [W1,W2] --require boot.rb [--daemonize] [--log FILE] [--pid-path FILE] [--debug]`
  class CLI
    USAGE = "Usage: sneakers work [Worker1,Worker2] --require FILE [--daemonize] [--log FILE] " \
            "[--pid-path FILE] [--debug]".freeze

    def self.start(argv = ARGV)
      new.run(argv.dup)
    end

    def run(argv)
      options = parse(argv)
      command = argv.shift
      case command
      when "work" then work(argv.shift || "", options)
      when "version", "--version" then puts Sneakers::VERSION
      else
        puts USAGE
        command.nil? || command == "help" ? 0 : 1
      end
    end

    def work(workers, options)
      opts = { daemonize: !!options[:daemonize] }
      opts[:log] = options[:log] || (opts[:daemonize] ? "sneakers.log" : $stdout)
      opts[:pid_path] = options[:pid_path] if options[:pid_path]
      opts[:log_level] = "debug" if options[:debug]
      if opts[:daemonize]
        puts "*** DEPRECATED: self-daemonization '--daemonize' is considered a bad practice; " \
             "run in the foreground under systemd, supervisor or the like."
      end
      Sneakers.configure(opts)
      require File.expand_path(options[:require]) if options[:require]

      missing = []
      workers = if workers.empty?
                  Sneakers::Worker::Classes
                else
                  found, missing = Sneakers::Utils.parse_workers(workers)
                  found
                end
      unless missing.empty?
        puts "Missing workers: #{missing.join(', ')}"
        puts "Did you `require` properly?"
        return 1
      end
      if workers.empty?
        puts <<~MSG
          Error: No workers found.
          Please set the classes of the workers you want to run like so:

            $ sneakers work MyWorker,FooWorker --require boot.rb
        MSG
        return 1
      end
      banner(workers)
      Sneakers::Runner.new(workers).run
      0
    end

    private

    def parse(argv)
      options = {}
      OptionParser.new do |o|
        o.banner = USAGE
        o.on("-r", "--require FILE", "Require a file that loads the app and its workers") { |v| options[:require] = v }
        o.on("-d", "--daemonize", "Run in the background") { options[:daemonize] = true }
        o.on("--log FILE", "Log file") { |v| options[:log] = v }
        o.on("--pid-path FILE", "PID file") { |v| options[:pid_path] = v }
        o.on("--debug", "Debug logging") { options[:debug] = true }
      end.parse!(argv)
      options
    end

    def banner(workers)
      pid = Sneakers::CONFIG[:pid_path]
      log = Sneakers::CONFIG[:log]
      puts ""
      puts "Workers ....: #{workers.join(', ')}"
      puts "Log ........: #{log == $stdout ? 'Console' : log}"
      puts "PID ........: #{pid}"
      puts ""
      puts "#{' ' * 31}Process control"
      puts "=" * 80
      puts "Stop (nicely) ..............: kill -SIGTERM `cat #{pid}`"
      puts "Stop (immediate) ...........: kill -SIGQUIT `cat #{pid}`"
      puts "Restart (nicely) ...........: kill -SIGUSR1 `cat #{pid}`"
      puts "Restart (immediate) ........: kill -SIGHUP `cat #{pid}`"
      puts "Reconfigure ................: kill -SIGUSR2 `cat #{pid}`"
      puts "Scale workers ..............: reconfigure, then restart"
      puts "=" * 80
      puts ""
      $stdout.flush
    end
  end
end
