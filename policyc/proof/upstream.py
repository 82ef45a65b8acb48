"""A recording upstream on 127.0.0.1: answers every request 200 and remembers, byte for byte, the
request line and headers that reached it, so a test can tell an allowed request from one that was
stopped in the proxy, and see exactly what an application behind the proxy would have been asked.

The response body is JSON of the same: `{"method", "target", "headers": [[name, value], ...]}`.
"""

from __future__ import annotations

import json
import socketserver
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Received:
    method: str
    target: str  # exactly as sent by the proxy (latin-1 decoded): no library rewrites it
    headers: tuple[tuple[str, str], ...]  # names lower-cased, values trimmed, in arrival order


class _Handler(socketserver.StreamRequestHandler):
    # Headers and body go out in one write, so Nagle never waits for a delayed ACK; keep it off
    # anyway for the proxy's pipelined requests.
    disable_nagle_algorithm = True

    def handle(self) -> None:
        while request_line := self.rfile.readline(65537):
            method, target, _ = request_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
            headers = self._read_headers()
            self._skip_body(dict(headers))
            received = Received(method, target, tuple(headers))
            self.server.received.append(received)
            body = json.dumps({"method": method, "target": target, "headers": headers}).encode()
            head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
            self.wfile.write(head % len(body) + (b"" if method == "HEAD" else body))

    def _read_headers(self) -> list[tuple[str, str]]:
        headers = []
        while (line := self.rfile.readline(65537)) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip().lower(), value.strip()))
        return headers

    def _skip_body(self, headers: dict[str, str]) -> None:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            # A proxy that gives up on a request mid-body closes the connection: stop at EOF.
            while (size_line := self.rfile.readline().split(b";")[0].strip()) and int(size_line, 16):
                self.rfile.read(int(size_line, 16) + 2)
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
        else:
            self.rfile.read(int(headers.get("content-length") or 0))


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class RecordingUpstream:
    """`with RecordingUpstream() as upstream:` serves on `upstream.address` until the block ends."""

    def __init__(self) -> None:
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.received = []
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def received(self) -> list[Received]:
        return self.server.received

    def __enter__(self) -> RecordingUpstream:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
