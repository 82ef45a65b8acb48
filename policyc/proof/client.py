"""Sends a `RawRequest` to a proxy exactly as described (request-target, Host and header lines
as given) on loopback and reads back one response: over a raw HTTP/1.1 socket (`send`), or as
HTTP/2 fields on a kept connection (`H2Session`), in the clear or over TLS with the request's
client certificate."""

from __future__ import annotations

import select
import socket
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from ..semantics.peer import ClientCertificate
from ..semantics.request import RawRequest


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
def tls_context(certificate: ClientCertificate | None, alpn: str = "http/1.1") -> ssl.SSLContext:
    """A client context presenting `certificate` and offering one protocol by ALPN. The proxy's
    own certificate is not checked: what is under test is how the proxy checks its clients."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_alpn_protocols([alpn])
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


class StreamRefused(ConnectionError):
    """The proxy reset the HTTP/2 stream (or the connection) instead of answering."""


def h2_fields(request: RawRequest, tls: bool) -> list[tuple[str, str]]:
    """The request as HTTP/2 header fields: the pseudo-headers from the method, the target and the
    Host (as :authority), then the header lines as given, names and values untouched."""
    fields = [(":method", request.method), (":scheme", "https" if tls else "http"), (":path", request.target)]
    if request.host is not None:
        fields.append((":authority", request.host))
    return fields + list(request.headers)


@dataclass(frozen=True)
class H2Response:
    status: int
    headers: list[tuple[bytes, bytes]]  # the response's header fields, then its trailers
    body: bytes


class H2Session:
    """One HTTP/2 connection (prior knowledge in the clear, or TLS with ALPN `h2`) on which
    requests are sent one after another; a new connection is opened when the proxy ends one."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None, timeout: float = 10.0):
        self.port, self.tls, self.timeout = port, tls, timeout
        self.sock: socket.socket | None = None

    def __enter__(self) -> H2Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _connect(self) -> None:
        plain = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        # Frames are small and requests follow one another: without this, Nagle's algorithm holds
        # each request until the proxy's delayed ACK of the previous write.
        plain.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = self.tls.wrap_socket(plain) if self.tls else plain
        except ssl.SSLError as e:
            plain.close()
            raise HandshakeRefused(str(e)) from e
        if self.tls and self.sock.selected_alpn_protocol() != "h2":
            self.close()
            raise ConnectionError("the proxy did not select h2 by ALPN")
        config = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False,
                                           normalize_outbound_headers=False, validate_inbound_headers=False)
        self.connection = h2.connection.H2Connection(config=config)
        self.connection.initiate_connection()
        self.sock.sendall(self.connection.data_to_send())

    def send(self, fields: list[tuple[str, str]], reset_seen: Callable[[], bool] | None = None) -> H2Response:
        """The proxy's answer to `fields`; raises StreamRefused when it resets the stream or ends
        the connection. `reset_seen` tells, while no answer has come, whether the proxy has already
        recorded the reset (see `_wait_readable`)."""
        try:
            if self.sock is None:
                self._connect()
            stream = self.connection.get_next_available_stream_id()
            encoded = [(name.encode("utf-8", "surrogateescape"), value.encode("utf-8", "surrogateescape"))
                       for name, value in fields]
            self.connection.send_headers(stream, encoded, end_stream=True)
            return self._exchange(stream, reset_seen)
        except ssl.SSLError as e:
            # With TLS 1.3 a refused client certificate shows as an alert on the first read.
            self.close()
            raise HandshakeRefused(str(e)) from e
        except (StreamRefused, OSError, h2.exceptions.ProtocolError):
            self.close()
            raise StreamRefused("the stream ended without an answer") from None

    def _exchange(self, stream: int, reset_seen: Callable[[], bool] | None) -> H2Response:
        headers, body = [], b""
        while True:
            self.sock.sendall(self.connection.data_to_send())
            if reset_seen is not None:
                self._wait_readable(reset_seen)
            data = self.sock.recv(65536)
            if not data:
                raise StreamRefused("connection closed")
            for event in self.connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived) \
                        and event.stream_id == stream:
                    headers += event.headers
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data if event.stream_id == stream else b""
                    self.connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                    self.sock.sendall(self.connection.data_to_send())
                    return H2Response(int(dict(headers)[b":status"]), headers, body)
                elif isinstance(event, h2.events.StreamReset) and event.stream_id == stream:
                    raise StreamRefused(f"stream reset, error {event.error_code}")
                elif isinstance(event, h2.events.ConnectionTerminated):
                    raise StreamRefused(f"connection ended, error {event.error_code}")

    def _wait_readable(self, reset_seen: Callable[[], bool]) -> None:
        """Waits for data from the proxy. A request that breaks the HTTP/2 codec ends the whole
        connection, and Envoy then writes nothing and closes only after its delayed-close timeout
        (1 s); but it logs the reset at once, and `reset_seen` reads that log."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
                return
            if select.select([self.sock], [], [], 0.01)[0]:
                return
            if reset_seen():
                raise StreamRefused("the proxy logged a reset")


def grpc_status_of(response: bytes) -> int | None:
    """The grpc-status header of a raw HTTP/1.1 response, unless none or OK (0)."""
    head = response.split(b"\r\n\r\n", 1)[0]
    return grpc_status_in(line.partition(b":")[::2] for line in head.split(b"\r\n")[1:])


def grpc_status_in(fields) -> int | None:
    """The grpc-status among response header fields (name, value as bytes), unless none or OK."""
    for name, value in fields:
        if name.strip().lower() == b"grpc-status" and value.strip().isdigit():
            return int(value) or None
    return None
