"""HTTP errors that happen below the application, answered in braid's one JSON error object like every other.

The FastAPI app answers what reaches it (:mod:`braid.service.http_api`); three failures do not reach it, or not
whole, and used to answer in uvicorn's plain text (or a 500):

- a body over the size limit: :class:`BodyLimit` refuses it (413, RESOURCE_EXHAUSTED, as gRPC answers an oversized
  message) from its Content-Length before any of it is read, or as soon as a chunked body passes the limit;
- a request the HTTP parser rejects (a request line or headers over h11's 16 KiB buffer, malformed HTTP):
  :class:`JsonErrorH11Protocol` answers 400 INVALID_ARGUMENT, then closes the connection (lingering, so the client
  reads the answer instead of a reset);
- a request still running when the shutdown grace period ends, which uvicorn cancels: :class:`AnswerWhenCutOff`
  answers it 503 UNAVAILABLE with Retry-After, as gRPC answers UNAVAILABLE, instead of uvicorn's 500.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from braid.service.errors import RETRY_AFTER_S, TooLarge

#: The most bytes a request line and its headers may take (h11's own default, set explicitly so the error can say it).
MAX_HEAD_BYTES = 16 * 1024


def error_object(status: str, message: str) -> dict[str, Any]:
    """braid's one error object: the gRPC status name and a message."""
    return {"error": {"status": status, "message": message}}


def retry_headers(http_status: int) -> dict[str, str]:
    """The headers every answer with ``http_status`` carries: Retry-After on 503 (UNAVAILABLE is retryable)."""
    return {"Retry-After": str(RETRY_AFTER_S)} if http_status == 503 else {}


def error_body(status: str, message: str) -> bytes:
    return json.dumps(error_object(status, message)).encode()


async def send_error(send: Callable, http_status: int, status: str, message: str) -> None:
    """Answer a whole response, braid's error object, through an ASGI ``send``."""
    body = error_body(status, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in retry_headers(http_status).items()]
    await send({"type": "http.response.start", "status": http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes (413) before they are read into memory."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await send_error(send, 400, "INVALID_ARGUMENT", "invalid Content-Length")
            if int(declared) > self.limit:
                too_large = TooLarge(f"request body over {self.limit} bytes")
                return await send_error(send, too_large.http_status, too_large.grpc_code.name, str(too_large))
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise TooLarge(f"request body over {self.limit} bytes")
            return message

        return await self.app(scope, limited, send)


class AnswerWhenCutOff:
    """ASGI middleware: a request cancelled before its response started (uvicorn cancels what still runs when the
    shutdown grace period ends) is answered 503 UNAVAILABLE with Retry-After. Its work on a worker thread, if any,
    runs to its end and is dropped, as a gRPC call's is when its server stops."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watched(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except asyncio.CancelledError:
            if started:
                raise
            # The cancellation is the server's own (it is stopping): answering it ends the task as asked.
            await send_error(send, 503, "UNAVAILABLE", "the server is shutting down; retry")


class JsonErrorH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering a request it cannot parse in braid's error object, not in plain text.

    The connection then closes lingering, as nginx's ``lingering_close`` does: the server stops sending, reads and
    drops what the client is still sending (the rest of a 1 MiB URL), and closes when the client does or after
    ``LINGER_S``. Closing at once with unread bytes makes the kernel reset the connection, and a reset can destroy
    the answer before the client reads it.
    """

    LINGER_S = 2.0
    _lingering = False

    def data_received(self, data: bytes) -> None:
        if not self._lingering:
            super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        body = error_body(
            "INVALID_ARGUMENT",
            f"invalid HTTP/1.1 request: malformed, or its request line and headers are over {MAX_HEAD_BYTES} bytes",
        )
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()
        asyncio.get_running_loop().call_later(self.LINGER_S, self.transport.close)
