"""The upstream transport over TLS, as to api.openai.com: its streams survive ``start_tls``, and a
kept-alive TLS connection is reused, not taken for one the server closed."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.upstream_transport import ReadableCheckStream, upstream_transport

TLS = Path(__file__).parents[1] / "support" / "tls"  # a self-signed localhost certificate, for tests


class Answer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def tls_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(TLS / "localhost-cert.pem", TLS / "localhost-key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://localhost:{server.server_port}/v1/chat/completions"
    server.shutdown()
    server.server_close()


async def test_requests_over_tls_share_one_kept_alive_connection(tls_server: str) -> None:
    trusted = ssl.create_default_context(cafile=TLS / "localhost-cert.pem")
    transport = upstream_transport(httpx.Limits(max_connections=10), verify=trusted)
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(3):
            response = await client.post(tls_server, content=b"{}")
            assert response.json() == {"ok": True}
        (connection,) = transport._pool.connections
        assert connection.is_idle() and not connection.has_expired()
        assert isinstance(connection._connection._network_stream, ReadableCheckStream)
