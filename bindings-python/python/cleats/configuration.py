"""`cleats.configure(**options)`: the global options, with the engine's names and defaults.

Options the engine reads travel to it as plain data. A few hold Python objects and stay here:
`metrics` (an object with increment/timing), `error_reporters` (callables), `hooks`
(`before_fork` / `after_fork` callables), `handler` (a class or a name), `log` (a path, a stream or
a `logging.Logger`)."""

from __future__ import annotations

import copy
import threading
import warnings
from typing import Any, Dict, List

from . import _engine

# Keys whose values are Python objects: kept out of what the engine sees.
PYTHON_ONLY = ("metrics", "error_reporters", "hooks", "handler", "log", "connection")

_lock = threading.RLock()
_config: Dict[str, Any] = {}
_configured = False


def defaults() -> Dict[str, Any]:
    """The engine's defaults (Sneakers' names and values), a fresh dict."""
    return _engine.defaults()


def _warn_unknown(options: Dict[str, Any]) -> None:
    known = set(_engine.known_options())
    for key in options:
        if key not in known:
            hint = _engine.closest_option(key)
            tail = f"; did you mean `{hint}`?" if hint else ""
            warnings.warn(f"cleats: unknown option `{key}` is ignored{tail}", stacklevel=3)


def configure(**options: Any) -> Dict[str, Any]:
    """Merges `options` deeply over the current configuration (nested dicts merge, other values
    replace) and validates it. Unknown keys warn with the closest real option. Returns the
    configuration."""
    global _configured
    _warn_unknown(options)
    if options.get("connection") is not None:
        from .errors import ConfigError

        raise ConfigError(
            "invalid option `connection`: cleats opens its own connections and cannot take a "
            "ready-made one; give the broker with `amqp` (and `vhost`) instead"
        )
    with _lock:
        merged = _deep_merge(copy.deepcopy(_config), options)
        # Validates the engine's part now, so a bad value fails at configure time.
        _engine.validate_worker("configure", "configure", _engine_part(merged), {})
        _config.clear()
        _config.update(merged)
        _configured = True
    if "log" in options or "log_level" in options:
        from . import log

        log.configure_from(options.get("log"), options.get("log_level"))
    return config()


def clear() -> None:
    """Back to the defaults."""
    global _configured
    with _lock:
        _config.clear()
        _configured = False


def configured() -> bool:
    return _configured


def configured_keys() -> List[str]:
    """The options set with `configure` (not defaults)."""
    with _lock:
        return list(_config)


def config() -> Dict[str, Any]:
    """The defaults merged with everything configured (a copy)."""
    with _lock:
        merged = _engine.merge_layers([_engine_part(_config)])
        for key in PYTHON_ONLY:
            if key in _config:
                merged[key] = _config[key]
        return merged


def get(key: str, default: Any = None) -> Any:
    with _lock:
        if key in _config:
            return _config[key]
    return config().get(key, default)


def engine_options(extra: Dict[str, Any] | None = None) -> Dict[str, Any]:
    """The global layer as the engine takes it (Python objects left out), with `extra` over it."""
    with _lock:
        out = _engine_part(_config)
    if extra:
        out = _deep_merge(out, _engine_part(extra))
    return out


def _engine_part(options: Dict[str, Any]) -> Dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in options.items() if k not in PYTHON_ONLY}


def _deep_merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    for key, value in over.items():
        if isinstance(base.get(key), dict) and isinstance(value, dict):
            base[key] = _deep_merge(dict(base[key]), value)
        else:
            base[key] = value
    return base


def redacted(options: Dict[str, Any]) -> Dict[str, Any]:
    """`options` with the password of the amqp URI shown as `***` (for printing)."""
    return _engine.redacted(_engine_part(options))
