"""Sends a `RawRequest` to a proxy exactly as described (request-target, Host and header lines
as given) over a raw HTTP/1.1 socket on loopback, in the clear or over TLS with the request's
client certificate, and reads back one response."""

from __future__ import annotations

import socket
import ssl
import tempfile
from functools import cache
from pathlib import Path

from ..interpret.peer import ClientCertificate
from ..interpret.request import RawRequest


class HandshakeRefused(ConnectionError):
    """The proxy refused the TLS handshake (a client certificate it does not trust)."""


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


@cache
def tls_context(certificate: ClientCertificate | None) -> ssl.SSLContext:
    """A client context presenting `certificate`. The proxy's own certificate is not checked:
    what is under test is how the proxy checks its clients."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if certificate is not None:
        with tempfile.TemporaryDirectory() as folder:  # the ssl module loads keys from files only
            chain, key = Path(folder, "chain.pem"), Path(folder, "key.pem")
            chain.write_text(certificate.chain)
            key.write_text(certificate.key)
            context.load_cert_chain(chain, key)
    return context


def send(port: int, request: RawRequest, timeout: float = 10.0, tls: bool = False) -> tuple[int, bytes]:
    """The response status and the whole raw response; over TLS when `tls`, presenting the
    request's client certificate (raises HandshakeRefused when the proxy refuses it)."""
    context = tls_context(request.certificate) if tls else None
    return send_bytes(port, request_bytes(request), request.method == "HEAD", timeout, context)


def send_bytes(port: int, data: bytes, head: bool = False, timeout: float = 10.0,
               tls: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    """`data` sent as is on a fresh connection; the status and the whole raw response. A proxy
    that closes without answering raises ConnectionError."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as plain:
        try:
            connection = tls.wrap_socket(plain) if tls else plain
            connection.sendall(data)
            response = _read_response(connection, head)
        except ssl.SSLError as e:
            # With TLS 1.3 the proxy judges the client's certificate after the client has
            # finished its handshake, so its refusal arrives as an alert on the first read.
            raise HandshakeRefused(str(e)) from e
    status_line = response.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise ConnectionError(f"no HTTP response: {response[:200]!r}")
    return int(status_line[1]), response


def grpc_status_of(response: bytes) -> int | None:
    """The grpc-status header of a raw HTTP/1.1 response, unless none or OK (0)."""
    head = response.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"grpc-status" and value.strip().isdigit():
            return int(value) or None
    return None
