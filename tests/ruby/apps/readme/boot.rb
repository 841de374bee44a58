# Configuration as in Sneakers' README; the broker URL and the output file come from the test.
require 'sneakers'
require 'json'

# The README's worker counts into redis; this stand-in appends to a file.
class FileCounter
  def incr(key)
    File.open(ENV.fetch('OUT'), 'a') { |f| f.flock(File::LOCK_EX); f.puts key }
  end
end
$redis = FileCounter.new

Sneakers.configure :heartbeat => 2, :amqp => ENV.fetch('AMQP_URL'), :vhost => ENV.fetch('VHOST'),
                   :exchange => 'sneakers', :exchange_type => :direct, :workers => 1,
                   :log => ENV.fetch('LOG'), :pid_path => ENV.fetch('PID_PATH')

require_relative 'processor'
