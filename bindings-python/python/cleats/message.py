"""What `work_with_params` and handlers receive besides the message: delivery info and metadata,
readable as attributes and as keys (like Bunny's)."""

from __future__ import annotations

from typing import Any, Dict, Optional


class _Fields(dict):
    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> Dict[str, Any]:
        return dict(self)


class DeliveryInfo(_Fields):
    """delivery_tag, routing_key, exchange, redelivered, consumer_tag."""

    delivery_tag: int
    routing_key: str
    exchange: str
    redelivered: bool
    consumer_tag: str


class Metadata(_Fields):
    """The message properties: headers (a dict, or None), content_type, content_encoding,
    delivery_mode, priority, correlation_id, reply_to, expiration, message_id, timestamp, type,
    user_id, app_id."""

    headers: Optional[Dict[str, Any]]
    content_type: Optional[str]
    content_encoding: Optional[str]
