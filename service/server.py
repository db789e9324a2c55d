"""Runs the gRPC and HTTP front ends over one core in one asyncio loop, and shuts both down gracefully.

Shutdown (SIGTERM or SIGINT) happens in this order: readiness turns false (gRPC health NOT_SERVING, HTTP /readyz
503) and new requests are refused with UNAVAILABLE / 503; requests already admitted finish (up to ``grace``
seconds); both listeners close; the worker pool and the pipelines close. The signal handlers are the loop's own
(uvicorn's are disabled), so one signal drains both protocols together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import uvicorn
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from braid.common.errors import BraidError
from braid.proto.braid.v1 import braid_pb2, braid_pb2_grpc
from braid.service.core import CoreBase
from braid.service.grpc_api import BraidServicer
from braid.service.http_api import create_app
from braid.service.http_transport import MAX_HEAD_BYTES, JsonErrorH11Protocol

log = logging.getLogger(__name__)
SERVICE_NAME = braid_pb2.DESCRIPTOR.services_by_name["Braid"].full_name


@dataclass(frozen=True)
class ServerConfig:
    """Where to listen and how. Port 0 picks a free port; ``tls_cert``/``tls_key`` (PEM) turn on TLS for both."""

    host: str = "127.0.0.1"
    grpc_port: int = 50051
    http_port: int = 8080
    tls_cert: Path | None = None
    tls_key: Path | None = None
    grace_s: float = 30.0
    console: bool = True  # the web console at / on the HTTP port

    def __post_init__(self) -> None:
        for name in ("grpc_port", "http_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise BraidError(f"{name.replace('_', '-')} must be between 0 and 65535, got {port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise BraidError("TLS needs both --tls-cert and --tls-key")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not Path(path).is_file():
                raise BraidError(f"TLS file not found: {path}")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # braid's server owns SIGTERM/SIGINT: it drains gRPC and HTTP together (uvicorn would re-raise them).
        yield


class BraidServer:
    """Both front ends over ``core``; :meth:`start` binds, :meth:`stop` drains."""

    def __init__(self, core: CoreBase, config: ServerConfig) -> None:
        self.core = core
        self.config = config
        self.grpc_port: int | None = None
        self.http_port: int | None = None
        self._grpc: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._http: _Uvicorn | None = None
        self._http_task: asyncio.Task | None = None
        self._app = None

    async def start(self) -> None:
        config = self.config
        limit = self.core.limits.max_request_bytes
        self._grpc = grpc.aio.server(options=[("grpc.max_receive_message_length", limit), ("grpc.so_reuseport", 0)])
        braid_pb2_grpc.add_BraidServicer_to_server(BraidServicer(self.core), self._grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self._grpc,
        )
        address = f"{config.host}:{config.grpc_port}"
        if config.tls:
            credentials = grpc.ssl_server_credentials(
                [(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())]
            )
            self.grpc_port = self._grpc.add_secure_port(address, credentials)
        else:
            self.grpc_port = self._grpc.add_insecure_port(address)
        if not self.grpc_port:
            raise BraidError(f"cannot listen for gRPC on {address} (port in use?)")
        await self._grpc.start()
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say so, and without it every
        # keep-alive response waits ~40 ms for the client's delayed ACK (Nagle).
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((config.host, config.http_port))
        except OSError as error:
            sock.close()
            raise BraidError(f"cannot listen for HTTP on {config.host}:{config.http_port}: {error}") from None
        self.http_port = sock.getsockname()[1]
        # A Ray broker's core answers through Ray handles, which may not block this event loop: off it, then.
        self._app = create_app(self.core, await asyncio.to_thread(self.core.list_pipelines), config.console)
        uvicorn_config = uvicorn.Config(
            self._app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            http=JsonErrorH11Protocol,  # requests h11 cannot parse answer braid's JSON error, not plain text
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
            timeout_graceful_shutdown=int(config.grace_s),
            ssl_certfile=str(config.tls_cert) if config.tls else None,
            ssl_keyfile=str(config.tls_key) if config.tls else None,
        )
        self._http = _Uvicorn(uvicorn_config)
        self._http_task = asyncio.create_task(self._http.serve(sockets=[sock]))
        while not self._http.started:
            if self._http_task.done():
                self._http_task.result()  # raises what stopped it
                raise BraidError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)

    @property
    def addresses(self) -> dict[str, str]:
        scheme = "https" if self.config.tls else "http"
        return {
            "grpc": f"{self.config.host}:{self.grpc_port}",
            "http": f"{scheme}://{self.config.host}:{self.http_port}",
        }

    async def stop(self) -> bool:
        """Drain and close; True when every admitted request finished within the grace period."""
        grace = self.config.grace_s
        if self._app is not None:
            self._app.state.braid["draining"] = True
        await self._health.enter_graceful_shutdown()
        # gRPC stops taking RPCs (clients see UNAVAILABLE) and lets running ones finish; HTTP closes its listener and
        # idle connections; the core refuses what still arrives on open connections (503) and waits for the rest.
        if self._http is not None:
            self._http.should_exit = True
        waits = [asyncio.to_thread(self.core.drain, grace)]
        if self._grpc is not None:
            waits.append(self._grpc.stop(grace=grace))
        drained, *_ = await asyncio.gather(*waits)
        if self._http_task is not None:
            await self._http_task
        await asyncio.to_thread(self.core.close)
        return drained

    async def serve_until_signal(self, on_ready=None) -> bool:
        """Start, call ``on_ready(server)``, serve until SIGTERM or SIGINT, then drain; returns :meth:`stop`."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        if on_ready is not None:
            on_ready(self)
        await stop.wait()
        log.warning("braid serve: signal received, draining")
        return await self.stop()
