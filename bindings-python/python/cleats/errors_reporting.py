"""Error reporters: callables `reporter(exception, worker, context)` called for every exception
raised by `work`. The default logs it with its traceback on the `cleats` logger."""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List

from . import configuration as config

Reporter = Callable[[BaseException, Any, Dict[str, Any]], None]


def default_logger(error: BaseException, worker: Any, context: Dict[str, Any]) -> None:
    logging.getLogger("cleats").error(
        "[Exception error=%r error_class=%s worker_class=%s] %s",
        str(error), type(error).__name__, context.get("class"), context.get("log_msg"),
        exc_info=(type(error), error, error.__traceback__),
    )


_BY_NAME: Dict[str, Reporter] = {"default_logger": default_logger}


def reporters() -> List[Reporter]:
    out: List[Reporter] = []
    for r in config.get("error_reporters") or []:
        if isinstance(r, str):
            if r in _BY_NAME:
                out.append(_BY_NAME[r])
        elif callable(r):
            out.append(r)
    return out
