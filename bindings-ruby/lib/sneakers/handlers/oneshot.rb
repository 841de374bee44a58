module Sneakers
  module Handlers
    # The default handler. Configured as is, the engine applies it (ack -> ack, reject ->
    # reject, error -> reject without requeue, noop -> nothing). A subclass is a custom handler:
    # its methods then run in Ruby, on the channel facade it is given.
    class Oneshot
      def initialize(channel, queue, opts)
        @channel = channel
        @queue = queue
        @opts = opts
      end

      def acknowledge(delivery_info, _metadata, _msg)
        @channel.acknowledge(delivery_info.delivery_tag, false)
      end

      def reject(delivery_info, _metadata, _msg, requeue = false)
        @channel.reject(delivery_info.delivery_tag, requeue)
      end

      def error(delivery_info, metadata, msg, _err)
        reject(delivery_info, metadata, msg)
      end

      def noop(_delivery_info, _metadata, _msg); end
    end
  end
end
