# Runs the Ruby demo: `sneakers work SignupWorker --require boot.rb` with 2 worker processes
# consumes published signups, then TERM drains and stops it. Run by scripts/demo.sh with the gem
# installed (GEM_HOME).
require 'tmpdir'
require 'json'

count = Integer(ARGV.first || 2000)
dir = Dir.mktmpdir('cleats-demo-')
ENV['DEMO_OUT'] = out = File.join(dir, 'processed.txt')
ENV['DEMO_LOG'] = File.join(dir, 'sneakers.log')
ENV['DEMO_PID'] = File.join(dir, 'sneakers.pid')
File.write(out, '')
here = __dir__
require File.join(here, 'boot')

sneakers = Gem.bin_path('cleats', 'sneakers')
master = spawn(RbConfig.ruby, sneakers, 'work', 'SignupWorker', '--require', File.join(here, 'boot.rb'))
lines = []
elapsed = 0.0
begin
  # The workers declare the queue; until then a mandatory publish comes back.
  deadline = Time.now + 60
  begin
    Sneakers.publish({ id: 0 }.to_json, to_queue: 'cleats.demo.ruby', mandatory: true)
  rescue Cleats::Error
    raise if Time.now > deadline
    sleep 0.1
    retry
  end
  started = Time.now
  (1...count).each { |i| Sneakers.publish({ id: i }.to_json, to_queue: 'cleats.demo.ruby') }
  loop do
    lines = File.readlines(out, chomp: true)
    break if lines.size >= count || Time.now > started + 60
    sleep 0.05
  end
  elapsed = Time.now - started
ensure
  Process.kill('TERM', master) # graceful: drain, then exit
  _, status = Process.wait2(master)
end

pids = lines.map { |l| l.split.first }.tally
ids = lines.map { |l| l.split.last }.uniq
puts "ruby: #{lines.size} messages consumed by #{pids.size} worker processes " \
     "(#{pids.sort.map { |p, n| "pid #{p}: #{n}" }.join(', ')}) in #{format('%.2f', elapsed)}s; " \
     "TERM stopped the master with exit status #{status.exitstatus}"
FileUtils.rm_rf(dir)
unless ids.size == count && status.success?
  warn "ruby demo failed: #{ids.size} of #{count} distinct messages, #{status.inspect}"
  exit 1
end
