"""The upstream client's transport: httpx's, whose connections answer httpcore's readability
check (is this idle connection closed by the server?) from their own socket."""

from __future__ import annotations

import socket
from typing import Any

import httpcore
import httpx

from gateway.upstream_transport import ReadableCheckBackend, ReadableCheckStream, upstream_transport


class SocketOnlyStream(httpcore.AsyncNetworkStream):
    """Knows its socket and nothing else, as far as get_extra_info goes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def get_extra_info(self, info: str) -> Any:
        return self.sock if info == "socket" else f"from the stream: {info}"


def test_the_pool_of_the_upstream_transport_connects_through_the_readable_check_backend() -> None:
    # The backend is swapped into a private attribute of httpcore's pool: a new httpx or
    # httpcore that moves it fails here, not silently.
    transport = upstream_transport(httpx.Limits(max_connections=10))
    pool: Any = transport._pool
    assert isinstance(pool._network_backend, ReadableCheckBackend)


def test_a_connection_is_readable_while_data_waits_and_once_the_peer_closed_it() -> None:
    here, there = socket.socketpair()
    stream = ReadableCheckStream(SocketOnlyStream(here))
    try:
        assert stream.get_extra_info("is_readable") is False  # idle and open: reusable
        there.sendall(b"x")
        assert stream.get_extra_info("is_readable") is True
        assert here.recv(1) == b"x"
        assert stream.get_extra_info("is_readable") is False
        there.close()
        assert stream.get_extra_info("is_readable") is True  # the peer's FIN: not reusable
        assert stream.get_extra_info("server_addr") == "from the stream: server_addr"
    finally:
        here.close()
    assert stream.get_extra_info("is_readable") is True  # closed here: dropped as well
