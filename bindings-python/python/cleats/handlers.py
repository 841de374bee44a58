"""Handlers decide what happens on the broker for each outcome of `work`.

`Oneshot` (the default) and `Maxretry` run inside the engine: naming them is enough. Any other
handler class is a custom handler, built per worker as `Klass(channel, queue, options)`; it
settles through the channel it was given (`channel.acknowledge(tag)`, `channel.reject(tag,
requeue)`, `channel.nack(tag, multiple, requeue)`), as Sneakers' custom handlers do with Bunny.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Union

if TYPE_CHECKING:
    from . import _engine


class Handler:
    """Base class of custom handlers; its defaults behave like Oneshot. A handler may also
    define the class method `configure_queue(name, options) -> queue_options`, used before the
    queue is declared (e.g. to add a dead-letter exchange)."""

    def __init__(self, channel: "Channel", queue: "Queue", options: Dict[str, Any]) -> None:
        self.channel = channel
        self.queue = queue
        self.options = options

    def acknowledge(self, delivery_info: Any, metadata: Any, msg: Any) -> None:
        self.channel.acknowledge(delivery_info.delivery_tag)

    def reject(self, delivery_info: Any, metadata: Any, msg: Any, requeue: bool = False) -> None:
        self.channel.reject(delivery_info.delivery_tag, requeue)

    def error(self, delivery_info: Any, metadata: Any, msg: Any, error: BaseException) -> None:
        self.reject(delivery_info, metadata, msg)

    def noop(self, delivery_info: Any, metadata: Any, msg: Any) -> None:
        pass


class Oneshot(Handler):
    """ack -> ack; reject -> reject; requeue -> reject with requeue; error -> reject. Runs in the
    engine."""

    engine_name = "oneshot"


class Maxretry(Handler):
    """Failed messages wait `retry_timeout` ms in `<queue>-retry`, come back, and after
    `retry_max_times` retries go to `<queue>-error` with a `retry_info` header. Runs in the
    engine."""

    engine_name = "maxretry"


HandlerSpec = Union[str, type, None]


def engine_name(spec: HandlerSpec) -> str:
    """The engine's `handler` option for a handler given as a class or a name."""
    if spec is None:
        return "oneshot"
    if isinstance(spec, str):
        return spec
    return getattr(spec, "engine_name", None) or "custom"


def custom_class(spec: HandlerSpec) -> Optional[type]:
    if isinstance(spec, type) and not getattr(spec, "engine_name", None):
        return spec
    return None


class Exchange:
    """What `channel.exchange(name, ...)` returns: publishes (confirmed) to that exchange."""

    def __init__(self, name: str) -> None:
        self.name = name

    def publish(self, payload: Any, routing_key: str = "", **options: Any) -> None:
        from .publisher import publish

        publish(payload, exchange=self.name, routing_key=routing_key, **options)


class Queue:
    """What a custom handler gets as its queue (and from `channel.queue`)."""

    def __init__(self, worker: "_engine.Worker", name: str) -> None:
        self._worker = worker
        self.name = name

    def bind(self, exchange: Union[str, Exchange], routing_key: str = "", arguments: Optional[dict] = None) -> None:
        name = exchange.name if isinstance(exchange, Exchange) else exchange
        self._worker.bind(self.name, name, routing_key, arguments)


class Channel:
    """Bunny-style channel operations for custom handlers, mapped to the engine's worker: acks
    and rejects go through the engine's ack bookkeeping, declarations are repeated after every
    reconnection."""

    def __init__(self, worker: "_engine.Worker") -> None:
        self._worker = worker

    def acknowledge(self, delivery_tag: int, multiple: bool = False) -> None:
        self._worker.apply("ack", delivery_tag, multiple, False)

    ack = acknowledge

    def reject(self, delivery_tag: int, requeue: bool = False) -> None:
        self._worker.apply("reject", delivery_tag, False, requeue)

    def nack(self, delivery_tag: int, multiple: bool = False, requeue: bool = False) -> None:
        self._worker.apply("nack", delivery_tag, multiple, requeue)

    def exchange(self, name: str, type: str = "direct", durable: bool = True,
                 auto_delete: bool = False, arguments: Optional[dict] = None) -> Exchange:
        self._worker.declare_exchange(name, type, durable, auto_delete, arguments)
        return Exchange(name)

    def queue(self, name: str, durable: bool = True, auto_delete: bool = False,
              exclusive: bool = False, arguments: Optional[dict] = None) -> Queue:
        self._worker.declare_queue(name, durable, auto_delete, exclusive, arguments)
        return Queue(self._worker, name)
