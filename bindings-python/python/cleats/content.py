"""Content types and encodings: how bodies are (de)serialised and (de)coded. JSON is built in;
unknown types and encodings pass through unchanged. A worker's own `content_type` /
`content_encoding` option wins over the message's properties."""

from __future__ import annotations

import gzip
import json
import threading
from typing import Any, Callable, Dict, Optional, Tuple

Codec = Callable[[Any], Any]


def _check(fn: Any, what: str) -> None:
    if not callable(fn):
        raise ValueError(f"{what} must be a one-argument callable, got {fn!r}")


class _Registry:
    def __init__(self, kind: str, builtins: Dict[str, Tuple[Codec, Codec]]) -> None:
        self._kind = kind
        self._builtins = builtins
        self._lock = threading.Lock()
        self._codecs: Dict[str, Tuple[Codec, Codec]] = dict(builtins)

    def _register(self, name: str, forward: Codec, backward: Codec, names: Tuple[str, str]) -> None:
        _check(forward, names[0])
        _check(backward, names[1])
        with self._lock:
            self._codecs[name] = (forward, backward)

    def reset(self) -> None:
        """Back to the built-in codecs only."""
        with self._lock:
            self._codecs = dict(self._builtins)

    def forward(self, name: Optional[str], value: Any) -> Any:
        codec = self._codecs.get(name) if name else None
        return codec[0](value) if codec else value

    def backward(self, name: Optional[str], value: Any) -> Any:
        codec = self._codecs.get(name) if name else None
        return codec[1](value) if codec else value


def _json_dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def _json_loads(body: Any) -> Any:
    return json.loads(body)


class ContentType(_Registry):
    """`cleats.content_types.register("application/json", serializer=..., deserializer=...)`."""

    def register(self, content_type: str, serializer: Codec, deserializer: Codec) -> None:
        self._register(content_type, serializer, deserializer, ("serializer", "deserializer"))

    def serialize(self, content_type: Optional[str], value: Any) -> Any:
        return self.forward(content_type, value)

    def deserialize(self, content_type: Optional[str], body: Any) -> Any:
        return self.backward(content_type, body)


class ContentEncoding(_Registry):
    """`cleats.content_encodings.register("gzip", encoder=..., decoder=...)`."""

    def register(self, content_encoding: str, encoder: Codec, decoder: Codec) -> None:
        self._register(content_encoding, encoder, decoder, ("encoder", "decoder"))

    def encode(self, content_encoding: Optional[str], body: Any) -> Any:
        return self.forward(content_encoding, body)

    def decode(self, content_encoding: Optional[str], body: Any) -> Any:
        return self.backward(content_encoding, body)


content_types = ContentType("content type", {"application/json": (_json_dumps, _json_loads)})
content_encodings = ContentEncoding("content encoding", {"gzip": (gzip.compress, gzip.decompress)})


def to_body(value: Any, content_type: Optional[str], content_encoding: Optional[str]) -> bytes:
    """Serialise then encode a message for publishing; the result must be bytes or str."""
    value = content_types.serialize(content_type, value)
    value = content_encodings.encode(content_encoding, value)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(
        f"cannot publish a {type(value).__name__}: pass bytes or str, or set a content_type "
        "whose serializer returns them (e.g. content_type='application/json')"
    )


def from_body(body: bytes, content_type: Optional[str], content_encoding: Optional[str]) -> Any:
    """Decode then deserialise a received body."""
    return content_types.deserialize(content_type, content_encodings.decode(content_encoding, body))
