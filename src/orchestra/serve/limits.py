"""Request limits: body size (V2) and concurrent episodes (V4).

- `BodyLimitMiddleware` answers 413 from the `Content-Length` header alone, before reading any of the body, and
  counts the bytes of a body sent without one, stopping at the cap (`BodyTooLarge`), so memory stays bounded
  whatever a client sends.
- `Slots` admits at most `capacity` episodes at once; one more is refused at once (503 with `Retry-After`), never
  queued, so an overloaded server answers fast instead of timing clients out.
"""

from __future__ import annotations

from typing import Any

from orchestra.serve.auth import send_json
from orchestra.serve.schema import error_body


class BodyTooLarge(Exception):
    """The body passed the cap while being read."""


def too_large_body(limit_bytes: int) -> dict[str, Any]:
    return error_body(f"Request body is larger than the server's limit of {limit_bytes} bytes.",
                      "invalid_request_error", "request_too_large")


class BodyLimitMiddleware:
    def __init__(self, app: Any, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            await send_json(send, 413, too_large_body(self.max_body_bytes), {"Connection": "close"})
            return
        seen = 0
        limit = self.max_body_bytes

        async def counted() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return message

        await self.app(scope, counted, send)


class Slots:
    """A non-blocking counter of running episodes."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.in_use = 0
        self.refused = 0

    def try_acquire(self) -> bool:
        if self.in_use >= self.capacity:
            self.refused += 1
            return False
        self.in_use += 1
        return True

    def release(self) -> None:
        self.in_use -= 1
