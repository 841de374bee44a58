"""Exception classes. The engine's errors map to these, one class per kind of problem, each with
the engine's message (which names the option, broker or exchange involved)."""

import builtins


class CleatsError(Exception):
    """Base class of every cleats error."""


class ConfigError(CleatsError, ValueError):
    """An option has a bad value; the message names the option."""


class ConnectionError(CleatsError, builtins.ConnectionError):
    """No broker answered (refused, unreachable, DNS, TLS handshake...)."""


class AuthenticationError(ConnectionError):
    """The broker refused the credentials or the vhost."""


class ChannelError(CleatsError):
    """The broker closed a channel with an error (e.g. PRECONDITION_FAILED on a queue declared
    with other arguments)."""


class PublishError(CleatsError):
    """A published message was not accepted."""


class PublishNackedError(PublishError):
    """The broker nacked a published message."""


class UnroutableError(PublishError):
    """A `mandatory` message could not be routed and came back."""


class TimeoutError(CleatsError, builtins.TimeoutError):
    """An operation did not complete within its deadline."""


class ForkError(CleatsError):
    """An engine or publisher was used in a forked child: create a new one there."""


class StateError(CleatsError, RuntimeError):
    """The engine cannot do this in its current state (e.g. adding a worker after start)."""


__all__ = [
    "CleatsError",
    "ConfigError",
    "ConnectionError",
    "AuthenticationError",
    "ChannelError",
    "PublishError",
    "PublishNackedError",
    "UnroutableError",
    "TimeoutError",
    "ForkError",
    "StateError",
]
