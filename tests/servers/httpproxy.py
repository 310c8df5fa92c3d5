"""A small threaded HTTP/1.1 forwarding proxy on 127.0.0.1 (test infrastructure).

Subclasses decide per request what to do (:meth:`Proxy.handle_request`):
forward it, answer it themselves, or misbehave (see faultproxy.py and
gcsproxy.py). Request and response bodies are buffered (test objects are
small); the upstream connection is one per client connection.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


class Response:
    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body


class Request:
    def __init__(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes):
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _read_body(self) -> bytes:
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            out = bytearray()
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _any(self) -> None:
        body = self._read_body()
        req = Request(self.command, self.path, list(self.headers.items()), body)
        self.server.proxy.handle_request(self, req)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _any

    # --- helpers used by Proxy subclasses ----------------------------------
    def upstream(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self, "_up", None)
        if conn is None:
            conn = http.client.HTTPConnection(
                self.server.proxy.upstream_host, self.server.proxy.upstream_port, timeout=120
            )
            conn.connect()
            assert conn.sock is not None
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._up = conn
        return conn

    def forward(self, req: Request) -> Response:
        headers = {k: v for k, v in req.headers if k.lower() not in HOP}
        for attempt in range(2):
            conn = self.upstream()
            try:
                conn.putrequest(req.method, req.path, skip_host=True, skip_accept_encoding=True)
                for k, v in headers.items():
                    conn.putheader(k, v)
                if req.body or req.method in ("PUT", "POST", "PATCH"):
                    if "content-length" not in {k.lower() for k in headers}:
                        conn.putheader("Content-Length", str(len(req.body)))
                conn.endheaders(req.body or None)
                resp = conn.getresponse()
                data = resp.read()
                return Response(resp.status, resp.reason, list(resp.getheaders()), data)
            except (ConnectionError, http.client.HTTPException, OSError):
                conn.close()
                self._up = None
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def send(self, resp: Response, *, body: bytes | None = None, head: bool = False) -> None:
        data = resp.body if body is None else body
        self.send_response_only(resp.status, resp.reason)
        length_sent = False
        for k, v in resp.headers:
            kl = k.lower()
            if kl in HOP:
                continue
            if kl == "content-length":
                length_sent = True
                if body is not None:
                    v = str(len(data))
            if kl == "location":
                v = self.server.proxy.rewrite_location(v)
            self.send_header(k, v)
        if not length_sent and not head and req_has_body(resp.status):
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()

    def reset(self) -> None:
        """Close the client connection with a TCP RST."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True
        try:
            self.connection.close()
        except OSError:
            pass

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        up = getattr(self, "_up", None)
        if up is not None:
            up.close()


def req_has_body(status: int) -> bool:
    return not (100 <= status < 200 or status in (204, 304))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: Proxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class Proxy:
    """Forward everything to ``upstream_port``; subclasses override handle_request."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def rewrite_location(self, value: str) -> str:
        up = f"http://{self.upstream_host}:{self.upstream_port}"
        return self.url + value[len(up) :] if value.startswith(up) else value

    def handle_request(self, h: _Handler, req: Request) -> None:
        h.send(h.forward(req), head=req.method == "HEAD")

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


Handler = _Handler
