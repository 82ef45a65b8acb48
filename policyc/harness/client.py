"""Sends a `RawRequest` to a proxy exactly as described (request-target, Host and header lines
as given) over a raw HTTP/1.1 socket on loopback, and reads back one response."""

from __future__ import annotations

import socket

from ..interpret.request import RawRequest


def request_bytes(request: RawRequest) -> bytes:
    lines = [f"{request.method} {request.target} {request.version}"]
    if request.host is not None:
        lines.append(f"Host: {request.host}")
    lines += [f"{name}: {value}" for name, value in request.headers]
    lines += ["Connection: close", "", ""]
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


def _read_response(connection: socket.socket, head_request: bool) -> bytes:
    """One whole response: the head, then a body by content-length or chunks. Reading to EOF
    instead would wait out Envoy's delayed close (1 s) after every local reply."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
    if head_request or status in (204, 304) or 100 <= status < 200:
        return head
    if b"content-length" in headers:
        length = int(headers[b"content-length"])
        while len(body) < length:
            chunk = connection.recv(65536)
            if not chunk:
                break
            body += chunk
    elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while not body.endswith(b"0\r\n\r\n"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            body += chunk
    else:
        while chunk := connection.recv(65536):
            body += chunk
    return head + b"\r\n\r\n" + body


def send(port: int, request: RawRequest, timeout: float = 10.0) -> tuple[int, bytes]:
    """The response status and the whole raw response."""
    return send_bytes(port, request_bytes(request), request.method == "HEAD", timeout)


def send_bytes(port: int, data: bytes, head: bool = False, timeout: float = 10.0) -> tuple[int, bytes]:
    """`data` sent as is on a fresh connection; the status and the whole raw response. A proxy
    that closes without answering raises ConnectionError."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(data)
        response = _read_response(connection, head)
    status_line = response.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise ConnectionError(f"no HTTP response: {response[:200]!r}")
    return int(status_line[1]), response
