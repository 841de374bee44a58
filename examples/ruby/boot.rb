# The Ruby half of the demo, written as a Sneakers app is: boot.rb configures, the worker file
# defines the worker. Nothing in it knows about cleats.
require 'sneakers'

Sneakers.configure amqp: ENV.fetch('AMQP_URL', 'amqp://guest:guest@127.0.0.1:5672'),
                   exchange: 'cleats-demo', workers: 2, threads: 4, prefetch: 50,
                   queue_options: { durable: false },
                   log: ENV.fetch('DEMO_LOG', STDOUT), pid_path: ENV.fetch('DEMO_PID', 'sneakers.pid')

require_relative 'signup_worker'
