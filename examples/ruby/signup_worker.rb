require 'sneakers'
require 'json'

# Appends "<pid> <id>" to $DEMO_OUT for each signup, so the demo can show which process did what.
class SignupWorker
  include Sneakers::Worker
  from_queue 'cleats.demo.ruby'

  def work(msg)
    signup = JSON.parse(msg)
    File.open(ENV.fetch('DEMO_OUT'), 'a') { |f| f.puts "#{Process.pid} #{signup['id']}" }
    ack!
  end
end
