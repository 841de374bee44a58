module Sneakers
  module Middleware
    # The middleware chain: `use(Klass, *args)`, `delete(Klass)`, `to_a`. Each is built as
    # `Klass.new(app, *args)`; the first registered is the outermost.
    class Config
      def self.use(klass, *args)
        middlewares << { class: klass, args: args }
      end

      def self.delete(klass)
        middlewares.reject! { |m| m[:class] == klass }
      end

      def self.to_a
        middlewares
      end

      def self.middlewares
        @middlewares ||= []
      end
    end
  end
end
