"""`cleats.Worker`: a class per queue, with `work(self, msg)` (or `async def work`, or
`work_with_params(self, msg, delivery_info, metadata)`) returning `self.ack()`, `self.reject()` or
`self.requeue()`. Anything else leaves the message unsettled (noop); an exception goes down the
handler's error path. Constructing a worker never connects, so `MyWorker().work(payload)` works in
a unit test without a broker."""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
import traceback
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Dict, List, Optional, Tuple, Type, TypeVar

from . import content
from . import configuration as config
from .handlers import Channel, Queue, custom_class, engine_name
from .message import DeliveryInfo, Metadata
from .metrics import NullMetrics

if TYPE_CHECKING:
    from . import _engine

ACK = "ack"
REJECT = "reject"
REQUEUE = "requeue"
OUTCOMES = (ACK, REJECT, REQUEUE)

_classes: List[Type["Worker"]] = []


def worker_classes() -> List[Type["Worker"]]:
    """Every subclass of `cleats.Worker` defined so far (with a queue)."""
    return [c for c in _classes if c.queue_name]


class Worker:
    """Subclass it and set `queue_name` (and `options`), or use `@cleats.from_queue(...)`."""

    queue_name: ClassVar[Optional[str]] = None
    options: ClassVar[Dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _classes.append(cls)

    def __init__(self, queue: Optional[str] = None, options: Optional[Dict[str, Any]] = None) -> None:
        self.queue = queue or type(self).queue_name
        self.opts: Dict[str, Any] = dict(type(self).options)
        if options:
            self.opts.update(options)
        self.id = f"worker-{self.queue}:1:{secrets.token_hex(4)}"
        self.logger = logging.getLogger("cleats")
        self.metrics: Any = config.get("metrics") or NullMetrics()
        # Set when the worker runs in an engine (see runner.py).
        self._engine_worker: Optional["_engine.Worker"] = None
        self._handler: Any = None
        self._chain: Optional[Callable[..., Any]] = None
        self._names: Dict[str, str] = {}
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    # ---- what work returns ------------------------------------------------------------------
    def ack(self) -> str:
        return ACK

    def reject(self) -> str:
        return REJECT

    def requeue(self) -> str:
        return REQUEUE

    # ---- what a subclass defines --------------------------------------------------------------
    def work(self, msg: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define work(self, msg)")

    def work_with_params(self, msg: Any, delivery_info: DeliveryInfo, metadata: Metadata) -> Any:
        return self.work(msg)

    # ---- publishing ---------------------------------------------------------------------------
    def publish(self, msg: Any, to_queue: Optional[str] = None, **options: Any) -> None:
        """Publishes on the worker's exchange (confirmed)."""
        from .publisher import publish

        if "exchange" in self.opts and "exchange" not in options:
            options["exchange"] = self.opts["exchange"]
        publish(msg, to_queue=to_queue, **options)

    @classmethod
    def enqueue(cls, msg: Any, **options: Any) -> None:
        """Publishes `msg` to this worker's queue, with its content type and encoding."""
        from .publisher import publish

        opts = cls.options
        routing = opts.get("routing_key")
        if isinstance(routing, str) and "routing_key" not in options:
            options["routing_key"] = routing
        elif "routing_key" not in options:
            options.setdefault("to_queue", cls.queue_name)
        for key in ("content_type", "content_encoding", "exchange"):
            if key in opts:
                options.setdefault(key, opts[key])
        publish(msg, **options)

    # ---- running in the engine ----------------------------------------------------------------
    def _attach(self, engine_worker: "_engine.Worker", loop: Optional[asyncio.AbstractEventLoop]) -> None:
        from .middleware import middleware

        self._engine_worker = engine_worker
        self._names = engine_worker.metric_names()
        self._loop = loop
        handler_class = custom_class(self.handler_spec())
        if handler_class is not None:
            self._handler = handler_class(
                Channel(engine_worker), Queue(engine_worker, engine_worker.queue), dict(self.opts)
            )
        self._chain = middleware.build(self._call_work)
        # Whether anything reads delivery_info and metadata on the success path; if not, they
        # are only built for error reporting, and never for a plain `work(msg)`.
        self._needs_params = (
            self._chain != self._call_work
            or self._handler is not None
            or type(self).work_with_params is not Worker.work_with_params
        )

    @classmethod
    def handler_spec(cls) -> Any:
        return cls.options.get("handler", config.get("handler"))

    @classmethod
    def engine_layer(cls) -> Dict[str, Any]:
        """The worker's own options as the engine takes them."""
        layer = {k: v for k, v in cls.options.items() if k not in config.PYTHON_ONLY}
        spec = cls.handler_spec()
        layer["handler"] = engine_name(spec)
        handler_class = custom_class(spec)
        if handler_class is not None and hasattr(handler_class, "configure_queue"):
            # Sneakers' hook: the handler adjusts the queue's options before it is declared.
            merged = config.config()
            merged.update(layer)
            queue_options = handler_class.configure_queue(cls.queue_name, merged)
            if queue_options is not None:
                layer["queue_options"] = queue_options
        return layer

    @classmethod
    def is_async(cls) -> bool:
        own = cls.work_with_params is not Worker.work_with_params
        return inspect.iscoroutinefunction(cls.work_with_params if own else cls.work)

    def _runs_on_loop(self) -> bool:
        """Whether `_process_async` may run this worker: async work, a loop, and no middleware
        (middleware is synchronous and expects the final result, so it needs a waiting thread)."""
        return self._loop is not None and self.is_async() and self._chain == self._call_work

    def _invoke(self, msg: Any, delivery_info: Any, metadata: Any) -> Any:
        """Calls the subclass's work; the result may be awaitable."""
        if type(self).work_with_params is not Worker.work_with_params:
            return self.work_with_params(msg, delivery_info, metadata)
        return self.work(msg)

    def _call_work(self, msg: Any, delivery_info: DeliveryInfo, metadata: Metadata, handler: Any) -> Any:
        return self._waited(self._invoke(msg, delivery_info, metadata))

    def _waited(self, result: Any) -> Any:
        """`work`'s result, after waiting for it on the loop if it is awaitable."""
        if inspect.isawaitable(result):
            if self._loop is None:
                raise RuntimeError("async work needs the worker process's asyncio loop")
            # This thread waits for its coroutine: at most `threads` are in flight per pool.
            result = asyncio.run_coroutine_threadsafe(_awaited(result), self._loop).result()
        return result

    def _process(self, delivery: "_engine.Delivery") -> str:
        """Runs one delivery through middleware and work, settles it, sends the metrics. The
        delivery is settled whatever the metrics object or a custom handler does."""
        # Nothing but `work(msg)` between the delivery and its settle, and no metrics to send.
        if not self._needs_params and type(self.metrics) is NullMetrics:
            return self._process_plain(delivery)
        info, meta = self._begin(delivery)
        msg: Any = None
        try:
            msg = self._decode(delivery)
            assert self._chain is not None
            result = self._chain(msg, info, meta, self._handler)
        except Exception as e:  # KeyboardInterrupt and SystemExit are not swallowed
            return self._finish(delivery, None, e, msg, info, meta)
        return self._finish(delivery, result, None, msg, info, meta)

    def _process_plain(self, delivery: "_engine.Delivery") -> str:
        """`_process` for a worker with only `work(msg)` and no metrics (the common case): the
        same decoding, outcomes and error path, without the calls that would do nothing (over
        a quarter of the Python threads' time per message when `work` only acks)."""
        msg: Any = None
        try:
            msg = self._decode(delivery)
            result = self.work(msg)
            if type(result) is not str:
                result = self._waited(result)
        except Exception as e:
            return self._finish(delivery, None, e, msg, None, None)
        outcome = _outcome(result)
        delivery.settle(outcome)
        return outcome

    async def _process_async(self, delivery: "_engine.Delivery") -> str:
        """`_process` as a task on the loop, for a worker that `_runs_on_loop`: the coroutine is
        awaited here rather than by a thread blocked on it."""
        info, meta = self._begin(delivery)
        msg: Any = None
        try:
            msg = self._decode(delivery)
            result = self._invoke(msg, info, meta)
            if inspect.isawaitable(result):
                result = await result
        # CancelledError is a BaseException: one raised by work is an error, as on the thread
        # path (where it arrives as concurrent.futures.CancelledError).
        except (Exception, asyncio.CancelledError) as e:
            return self._finish(delivery, None, e, msg, info, meta)
        return self._finish(delivery, result, None, msg, info, meta)

    def _begin(self, delivery: "_engine.Delivery") -> Tuple[Any, Any]:
        if type(self.metrics) is not NullMetrics:
            self._metric("increment", self._names["started"])
        if self._needs_params:
            return DeliveryInfo(delivery.delivery_info), Metadata(delivery.properties)
        return None, None

    def _decode(self, delivery: "_engine.Delivery") -> Any:
        ctype = self.opts.get("content_type") or delivery.content_type
        cenc = self.opts.get("content_encoding") or delivery.content_encoding
        if not ctype and not cenc:
            return delivery.body  # no codec applies to a message with neither
        return content.from_body(delivery.body, ctype, cenc)

    def _finish(self, delivery: "_engine.Delivery", result: Any, error: Optional[BaseException],
                msg: Any, info: Any, meta: Any) -> str:
        """Reports `error`, runs the custom handler, settles, sends the metrics."""
        error_info = None
        if error is None:
            outcome = _outcome(result)
        else:
            outcome = "error"
            error_info = (type(error).__qualname__, str(error), backtrace(error))
            if info is None:
                info, meta = DeliveryInfo(delivery.delivery_info), Metadata(delivery.properties)
            self._report(error, msg, info, meta)
        if self._handler is not None:
            self._run_custom_handler(outcome, info, meta, msg, error)
        elapsed = delivery.settle(outcome, error_info)
        if type(self.metrics) is not NullMetrics:  # the default: nothing to send
            names = self._names
            self._metric("timing", names["time"], elapsed)
            assert self._engine_worker is not None
            if self._engine_worker.ack:
                self._metric("increment", names[f"handled.{outcome}"])
            self._metric("increment", names["ended"])
        return outcome

    def _metric(self, method: str, *args: Any) -> None:
        try:
            getattr(self.metrics, method)(*args)
        except Exception:
            self.logger.exception("metrics %s%r failed", method, args)

    def _run_custom_handler(self, outcome: str, info: DeliveryInfo, meta: Metadata, msg: Any,
                            error: Optional[BaseException]) -> None:
        h = self._handler
        try:
            if outcome == ACK:
                h.acknowledge(info, meta, msg)
            elif outcome == REJECT:
                h.reject(info, meta, msg)
            elif outcome == REQUEUE:
                h.reject(info, meta, msg, True)
            elif outcome == "error":
                h.error(info, meta, msg, error)
            else:
                h.noop(info, meta, msg)
        except Exception as e:
            self.logger.exception("%s: custom handler %s failed: %s", type(self).__name__,
                                  type(h).__name__, e)

    def _report(self, error: BaseException, msg: Any, info: DeliveryInfo, meta: Metadata) -> None:
        from .errors_reporting import reporters

        context = {
            "log_msg": f"{self.id} {msg!r}"[:1000],
            "class": type(self).__name__,
            "message": msg,
            "delivery_info": info,
            "metadata": meta,
        }
        for reporter in reporters():
            try:
                reporter(error, self, context)
            except Exception:
                self.logger.exception("error reporter %r failed", reporter)


def _outcome(result: Any) -> str:
    """What `work` returned, as the outcome to settle with: anything but an outcome is noop."""
    return result if isinstance(result, str) and result in OUTCOMES else "noop"


def backtrace(error: BaseException) -> List[str]:
    """The frames of `error`, innermost first as in Ruby's backtraces (so that Maxretry's first
    10 lines show where it was raised): `file:line:in `function'`."""
    frames = traceback.extract_tb(error.__traceback__)
    return [f"{f.filename}:{f.lineno}:in `{f.name}'" for f in reversed(frames)]


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


W = TypeVar("W", bound=Type[Worker])


def from_queue(queue: str, **options: Any) -> Callable[[W], W]:
    """Class decorator: `@cleats.from_queue("emails", threads=5, handler=cleats.Maxretry)`."""

    def decorate(cls: W) -> W:
        cls.queue_name = queue
        cls.options = {**getattr(cls, "options", {}), **options}
        return cls

    return decorate


def resolve(spec: str) -> Type[Worker]:
    """`module:Class` (or `module.Class`) -> the class."""
    import importlib

    module, _, name = spec.partition(":") if ":" in spec else spec.rpartition(".")
    if not module or not name:
        raise ValueError(f"worker '{spec}' must be written module:ClassName")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Worker)):
        raise TypeError(f"{spec} is not a subclass of cleats.Worker")
    return obj
