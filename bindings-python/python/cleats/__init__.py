"""cleats: RabbitMQ workers on a Rust engine, with Sneakers' worker model in Python's idiom.

    import cleats

    cleats.configure(amqp="amqp://guest:guest@localhost:5672", threads=5)

    @cleats.from_queue("emails", content_type="application/json")
    class EmailWorker(cleats.Worker):
        def work(self, msg):
            send(msg["to"])
            return self.ack()

Run it with `cleats work app.workers:EmailWorker` (or `python -m cleats work ...`).
"""

from . import _engine
from .configuration import clear, config, configure, configured, defaults, redacted
from .content import ContentEncoding, ContentType, content_encodings, content_types
from .errors import (
    AuthenticationError,
    ChannelError,
    CleatsError,
    ConfigError,
    ConnectionError,
    ForkError,
    PublishError,
    PublishNackedError,
    StateError,
    TimeoutError,
    UnroutableError,
)
from .errors_reporting import default_logger
from .handlers import Channel, Handler, Maxretry, Oneshot
from .message import DeliveryInfo, Metadata
from .metrics import LoggingMetrics, MemoryMetrics, NullMetrics
from .middleware import Middleware, middleware
from .publisher import Publisher, publish, publish_batch
from .runner import WorkerGroup, run
from .worker import ACK, REJECT, REQUEUE, Worker, from_queue, worker_classes

__version__: str = _engine.__version__

__all__ = [
    "ACK", "REJECT", "REQUEUE",
    "AuthenticationError", "Channel", "ChannelError", "CleatsError", "ConfigError",
    "ConnectionError", "ContentEncoding", "ContentType", "DeliveryInfo", "ForkError", "Handler",
    "LoggingMetrics", "Maxretry", "MemoryMetrics", "Metadata", "Middleware", "NullMetrics",
    "Oneshot", "PublishError", "PublishNackedError", "Publisher", "StateError", "TimeoutError",
    "UnroutableError", "Worker", "WorkerGroup", "clear", "config", "configure", "configured",
    "content_encodings", "content_types", "default_logger", "defaults", "from_queue",
    "middleware", "publish", "publish_batch", "redacted", "run", "worker_classes",
]
