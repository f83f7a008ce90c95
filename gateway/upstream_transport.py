"""The upstream client's transport: httpx's own, with network streams that answer httpcore's
"is this idle connection readable?" cheaply.

Before each request and after each response, httpcore's pool asks every idle keep-alive
connection whether its socket is readable (a server that closed it). Through anyio that question
builds the stream's whole attribute table first: ~9 µs per idle connection, against ~1 µs for
the ``poll`` itself. With 64 connections to an upstream that was 15% of the event loop's time at
concurrency 64 (py-spy, memory read; 9% with these streams, the ``poll`` calls being most of what is
left). These streams keep the socket from the moment they connect and poll it directly; everything
else goes to httpcore's stream unchanged.
"""

# httpcore's stream and backend interfaces take their timeouts as parameters.
# ruff: noqa: ASYNC109

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]  # httpcore's


def socket_readable(sock: socket.socket) -> bool:
    """Whether a read would return at once: data, or the end of a connection the peer closed."""
    fd = sock.fileno()
    if fd < 0:
        return True  # closed here: as good as readable, so httpcore drops the connection
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class ReadableCheckStream(httpcore.AsyncNetworkStream):
    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        # TLS streams report the socket underneath, as anyio's do for "is_readable".
        self._socket: socket.socket | None = stream.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        return ReadableCheckStream(await self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable" and self._socket is not None:
            return socket_readable(self._socket)
        return self._stream.get_extra_info(info)


class ReadableCheckBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, backend: httpcore.AsyncNetworkBackend) -> None:
        self._backend = backend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return ReadableCheckStream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SocketOption] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return ReadableCheckStream(await self._backend.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


def upstream_transport(limits: httpx.Limits, verify: ssl.SSLContext | bool = True) -> httpx.AsyncHTTPTransport:
    """httpx's transport (no proxies or certificates from the environment), its pool connecting
    through ReadableCheckBackend. httpx takes no network backend, so the pool's is swapped after it
    is built; tests/unit/test_upstream_transport.py fails if a new httpx or httpcore moves it.
    ``verify``: httpx's, for tests that trust their own certificate."""
    transport = httpx.AsyncHTTPTransport(verify=verify, limits=limits, trust_env=False)
    pool = transport._pool
    if not isinstance(pool, httpcore.AsyncConnectionPool) or not hasattr(pool, "_network_backend"):
        raise RuntimeError("httpx's transport holds no httpcore connection pool: see gateway/upstream_transport.py")
    pool._network_backend = ReadableCheckBackend(pool._network_backend)
    return transport
