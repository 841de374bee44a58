"""The middleware chain around `work`: `cleats.middleware.use(Klass, *args)`. Each middleware is
built as `Klass(app, *args)` and answers `__call__(msg, delivery_info, metadata, handler)`,
calling `app(...)` to continue. The first registered is the outermost."""

from __future__ import annotations

import threading
from typing import Any, Callable, List, Tuple

App = Callable[[Any, Any, Any, Any], Any]


class Middleware:
    """Base class (optional): keeps `app` and passes everything on."""

    def __init__(self, app: App, *args: Any) -> None:
        self.app = app

    def __call__(self, msg: Any, delivery_info: Any, metadata: Any, handler: Any) -> Any:
        return self.app(msg, delivery_info, metadata, handler)


class MiddlewareChain:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: List[Tuple[type, Tuple[Any, ...]]] = []

    def use(self, klass: type, *args: Any) -> None:
        with self._lock:
            self._entries.append((klass, args))

    def delete(self, klass: type) -> None:
        with self._lock:
            self._entries = [e for e in self._entries if e[0] is not klass]

    def clear(self) -> None:
        with self._lock:
            self._entries = []

    def to_list(self) -> List[Tuple[type, Tuple[Any, ...]]]:
        with self._lock:
            return list(self._entries)

    def build(self, innermost: App) -> App:
        """The chain around `innermost` (built once per worker)."""
        app = innermost
        for klass, args in reversed(self.to_list()):
            app = klass(app, *args)
        return app


middleware = MiddlewareChain()
