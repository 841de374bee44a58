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
        @call_with_params = respond_to?(:work_with_params) # once, as Sneakers does
      end

      def process_delivery(delivery)
        msg = delivery.body
        meter = metrics
        # Without metrics configured there is nothing to count or time: NullMetrics' calls do
        # nothing, and cost a Ruby thread more than the engine spends on a message.
        meter = nil if meter.instance_of?(Sneakers::Metrics::NullMetrics)
        # [delivery_info, metadata], made only when something reads them: middleware,
        # work_with_params, a custom handler or an error report.
        views = nil
        res = nil
        error = nil
        finished = false
        begin
          middlewares = Sneakers.middleware.to_a
          views = views_of(delivery) if @call_with_params || @custom_handler || !middlewares.empty?
          if meter
            meter.increment(@metric_names[:started])
            meter.timing(@metric_names[:time]) do
              res = run_middleware_and_work(decode(delivery, msg), middlewares, views)
            end
          else
            res = run_middleware_and_work(decode(delivery, msg), middlewares, views)
          end
          finished = true
        rescue SignalException, SystemExit
          # Not swallowed (ServerEngine and the interpreter handle them); the ensure below puts
          # the message back.
          raise
        rescue Exception => e # rubocop:disable Lint/RescueException -- as Sneakers: any failure is :error
          res = :error
          error = e
          views ||= views_of(delivery)
          worker_error(e, log_msg: log_msg(msg), class: self.class.name, message: msg,
                          delivery_info: views[0], metadata: views[1])
        ensure
          if finished || error
            settle(delivery, res, error, views, msg, meter)
          else
            # Interrupted (signal, exit, Thread#kill): the work did not finish, so the message
            # goes back on its queue instead of waiting unacknowledged.
            views&.each(&:load!)
            delivery.settle(@should_ack ? :requeue : :noop, nil, nil, nil)
          end
        end
      end

      private

      def views_of(delivery)
        [Sneakers::DeliveryInfo.new(nil, delivery, :delivery_info),
         Sneakers::Metadata.new(nil, delivery, :properties)]
      end

      # Sneakers' decoding (content encoding, then content type). While nothing is registered
      # every payload passes through, so the message's properties are not even read.
      def decode(delivery, msg)
        if ContentEncoding.registered?
          msg = ContentEncoding.decode(msg, @content_encoding || delivery.content_encoding)
        end
        return msg unless ContentType.registered?

        ContentType.deserialize(msg, @content_type || delivery.content_type)
      end

      def run_middleware_and_work(msg, middlewares, views)
        delivery_info, metadata = views
        return call_work(msg, delivery_info, metadata) if middlewares.empty?

        app = ->(m, info, meta, _handler) { call_work(m, info, meta) }
        chain = middlewares.reverse.reduce(app) { |inner, mw| mw[:class].new(inner, *mw[:args]) }
        chain.call(msg, delivery_info, metadata, @handler)
      end

      def call_work(msg, delivery_info, metadata)
        @call_with_params ? work_with_params(msg, delivery_info, metadata) : work(msg)
      end

      # Views handed out may be read later (a reporter's queue, a saved metadata): they load
      # their data before the delivery lets go of it. `meter` is nil without metrics.
      def settle(delivery, res, error, views, msg, meter)
        views&.each(&:load!)
        outcome = case res
                  when :ack, :reject, :requeue, :error then res
                  else :noop
                  end
        if @should_ack
          run_custom_handler(outcome, views, msg, error) if @custom_handler
          if error
            delivery.settle(:error, error.class.name, error.message.to_s, Array(error.backtrace))
          else
            delivery.settle(outcome, nil, nil, nil)
          end
          meter&.increment(@metric_names[:handled][outcome])
        else
          delivery.settle(:noop, nil, nil, nil) # auto-ack: only counted, nothing on the wire
        end
        meter&.increment(@metric_names[:ended])
      end

      def run_custom_handler(outcome, views, msg, error)
        delivery_info, metadata = views
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
