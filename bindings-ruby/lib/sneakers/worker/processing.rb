module Sneakers
  module Worker
    # One message, on the Ruby thread that pulled it from the engine: decode, run the middleware
    # chain and `work`, report errors, settle with the engine, forward the metrics (names from
    # the engine). Kept apart from the mixin's public API.
    module Processing
      # Called by Cleats::WorkerSet once the engine knows this worker.
      def attach_engine(native_worker, handler)
        @native_worker = native_worker
        @handler = handler
        @metric_names = native_worker.metric_names
      end

      def process_delivery(delivery)
        delivery_info = Sneakers::DeliveryInfo.new(nil, delivery, :delivery_info)
        metadata = Sneakers::Metadata.new(nil, delivery, :properties)
        msg = delivery.body
        names = @metric_names
        res = nil
        error = nil
        finished = false
        begin
          metrics.increment(names[:started])
          metrics.timing(names[:time]) do
            res = run_middleware_and_work(delivery, msg, delivery_info, metadata)
          end
          finished = true
        rescue SignalException, SystemExit
          # Not swallowed (ServerEngine and the interpreter handle them); the ensure below puts
          # the message back.
          raise
        rescue Exception => e # rubocop:disable Lint/RescueException -- as Sneakers: any failure is :error
          res = :error
          error = e
          worker_error(e, log_msg: log_msg(msg), class: self.class.name, message: msg,
                          delivery_info: delivery_info, metadata: metadata)
        ensure
          if finished || error
            settle(delivery, res, error, delivery_info, metadata, msg)
          else
            # Interrupted (signal, exit, Thread#kill): the work did not finish, so the message
            # goes back on its queue instead of waiting unacknowledged.
            delivery.settle(@should_ack ? "requeue" : "noop", nil, nil, nil)
          end
        end
      end

      private

      def run_middleware_and_work(delivery, msg, delivery_info, metadata)
        decoded = ContentEncoding.decode(msg, @content_encoding || delivery.content_encoding)
        deserialized = ContentType.deserialize(decoded, @content_type || delivery.content_type)
        middlewares = Sneakers.middleware.to_a
        return call_work(deserialized, delivery_info, metadata) if middlewares.empty?

        app = ->(m, info, meta, _handler) { call_work(m, info, meta) }
        chain = middlewares.reverse.reduce(app) { |inner, mw| mw[:class].new(inner, *mw[:args]) }
        chain.call(deserialized, delivery_info, metadata, @handler)
      end

      def call_work(msg, delivery_info, metadata)
        respond_to?(:work_with_params) ? work_with_params(msg, delivery_info, metadata) : work(msg)
      end

      OUTCOMES = %i[ack reject requeue error].freeze

      def settle(delivery, res, error, delivery_info, metadata, msg)
        outcome = OUTCOMES.include?(res) ? res : :noop
        if @should_ack
          run_custom_handler(outcome, delivery_info, metadata, msg, error) if @custom_handler
          if error
            delivery.settle("error", error.class.name, error.message.to_s, Array(error.backtrace))
          else
            delivery.settle(outcome.to_s, nil, nil, nil)
          end
          metrics.increment(@metric_names[:handled][outcome])
        else
          delivery.settle("noop", nil, nil, nil) # auto-ack: only counted, nothing on the wire
        end
        metrics.increment(@metric_names[:ended])
      end

      def run_custom_handler(outcome, delivery_info, metadata, msg, error)
        case outcome
        when :ack then @handler.acknowledge(delivery_info, metadata, msg)
        when :reject then @handler.reject(delivery_info, metadata, msg)
        when :requeue then @handler.reject(delivery_info, metadata, msg, true)
        when :error then @handler.error(delivery_info, metadata, msg, error)
        else @handler.noop(delivery_info, metadata, msg)
        end
      rescue StandardError => e
        logger.error("handler #{@handler.class} failed on #{outcome}: #{e.class}: #{e.message}")
      end

      public

      # Whether this worker's handler runs in Ruby (any class but the built-in ones).
      def custom_handler=(flag)
        @custom_handler = flag
      end
    end
  end
end
