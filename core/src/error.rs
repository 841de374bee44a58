//! The one error type of the engine. Bindings map each variant to an exception class of their
//! language, so variants follow what a user can do about them, not where they came from.

use std::fmt;

/// Result alias used across the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// An option has a bad value. `option` is the option's name as the user wrote it
    /// (e.g. `prefetch`, `exchange_options.type`, `amqp`).
    InvalidOption { option: String, message: String },
    /// No broker answered (refused, unreachable, DNS, TLS handshake...).
    ConnectionFailed { broker: String, message: String },
    /// The broker refused our credentials or the vhost.
    AuthenticationFailed { broker: String, message: String },
    /// The broker closed a channel or the connection with an error (e.g. a queue declared with
    /// other arguments than the existing one: PRECONDITION_FAILED).
    Channel { message: String },
    /// The broker nacked a published message.
    PublishNacked {
        exchange: String,
        routing_key: String,
    },
    /// A `mandatory` message could not be routed and came back.
    Unroutable {
        exchange: String,
        routing_key: String,
        reply_code: u16,
        reply_text: String,
    },
    /// An operation did not complete within its deadline.
    Timeout { operation: String, seconds: f64 },
    /// The engine was created in another process: a forked child must create its own.
    Forked { created_in: u32, used_in: u32 },
    /// The engine was asked for something it cannot do in its current state
    /// (e.g. adding a worker after start, using it after stop).
    InvalidState { message: String },
}

impl Error {
    pub(crate) fn option(option: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidOption {
            option: option.into(),
            message: message.into(),
        }
    }

    pub(crate) fn state(message: impl Into<String>) -> Self {
        Error::InvalidState {
            message: message.into(),
        }
    }

    /// Classifies a lapin error raised while talking to `broker` (already redacted).
    pub(crate) fn from_lapin(broker: &str, err: &lapin::Error) -> Self {
        use lapin::ErrorKind as K;
        let message = err.to_string();
        match err.kind() {
            K::IOError(_) | K::InvalidProtocolVersion(_) | K::ParsingError(_) => {
                Error::ConnectionFailed {
                    broker: broker.to_string(),
                    message,
                }
            }
            K::AuthProviderError(_) => Error::AuthenticationFailed {
                broker: broker.to_string(),
                message,
            },
            K::ProtocolError(amqp) => {
                let text = amqp.to_string();
                if text.contains("ACCESS_REFUSED") || text.contains("NOT_ALLOWED") {
                    Error::AuthenticationFailed {
                        broker: broker.to_string(),
                        message,
                    }
                } else {
                    Error::Channel { message }
                }
            }
            K::InvalidConnectionState(_) => Error::ConnectionFailed {
                broker: broker.to_string(),
                message,
            },
            _ => Error::Channel { message },
        }
    }

    /// True for errors that a retry on a new connection can cure.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::ConnectionFailed { .. } | Error::Timeout { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidOption { option, message } => {
                write!(f, "invalid option `{option}`: {message}")
            }
            Error::ConnectionFailed { broker, message } => {
                write!(f, "could not connect to RabbitMQ at {broker}: {message}")
            }
            Error::AuthenticationFailed { broker, message } => write!(
                f,
                "RabbitMQ at {broker} refused the login (check user, password and vhost in `amqp`/`vhost`): {message}"
            ),
            Error::Channel { message } => write!(f, "RabbitMQ channel error: {message}"),
            Error::PublishNacked {
                exchange,
                routing_key,
            } => write!(
                f,
                "RabbitMQ refused (nacked) a message published to exchange '{exchange}' with routing key '{routing_key}'"
            ),
            Error::Unroutable {
                exchange,
                routing_key,
                reply_code,
                reply_text,
            } => write!(
                f,
                "mandatory message to exchange '{exchange}' with routing key '{routing_key}' was returned: {reply_code} {reply_text}"
            ),
            Error::Timeout { operation, seconds } => {
                write!(f, "{operation} did not complete within {seconds}s")
            }
            Error::Forked {
                created_in,
                used_in,
            } => write!(
                f,
                "this cleats engine was created in process {created_in} and cannot be used after fork (in process {used_in}); create a new one in the child"
            ),
            Error::InvalidState { message } => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}
