require "cleats/native"

# Exceptions of the engine, under the names Sneakers apps may rescue. The classes are defined
# once, by the native extension, from the engine's error kinds:
#   Cleats::Error < StandardError           any engine error
#     Cleats::ConnectionError               no broker answered
#       Cleats::AuthenticationError         credentials or vhost refused
#     Cleats::ChannelError                  the broker closed a channel (e.g. PRECONDITION_FAILED)
#     Cleats::PublishError                  a publish was nacked
#       Cleats::UnroutableError             a mandatory message came back
#     Cleats::TimeoutError, Cleats::ForkError, Cleats::StateError
#   Cleats::ConfigError < ArgumentError     an option has a bad value (the message names it)
module Sneakers
  Error = Cleats::Error
  ConnectionError = Cleats::ConnectionError
  AuthenticationError = Cleats::AuthenticationError
  ChannelError = Cleats::ChannelError
  PublishError = Cleats::PublishError
  ConfigError = Cleats::ConfigError
end
