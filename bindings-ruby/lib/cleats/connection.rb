module Cleats
  # The `connection` option: Sneakers accepts a ready Bunny session (or a callable returning one).
  # The engine opens its own connections, so only the broker address is taken from it.
  module Connection
    def self.apply(opts)
      conn = opts[:connection]
      return opts if conn.nil?

      conn = conn.call if conn.respond_to?(:call)
      unless %i[host port user pass vhost].all? { |m| conn.respond_to?(m) }
        raise ArgumentError, "cleats cannot use the `connection` object #{conn.class}: it opens its own " \
                             "connections. Set `amqp` (and `vhost`) instead, or pass a Bunny session to read them from."
      end
      scheme = conn.respond_to?(:ssl?) && conn.ssl? ? "amqps" : "amqp"
      # Percent-encoding (a space is %20: `+` would stay a plus in a URI's user info).
      user = URI.encode_www_form_component(conn.user.to_s).gsub("+", "%20")
      pass = URI.encode_www_form_component(conn.pass.to_s).gsub("+", "%20")
      opts.merge(amqp: "#{scheme}://#{user}:#{pass}@#{conn.host}:#{conn.port}", vhost: conn.vhost, connection: nil)
    end
  end
end
