"""What a gRPC client reads of the proxy's own answers: takes a request's headers and the
decision, and returns the grpc-status the client sees, or None when the proxy does not answer
(the upstream does) or answers the plain HTTP way.

Observed on Envoy 1.40 with the emitted configuration (tests/grpc/test_grpc_envoy.py):
- A request is a gRPC call when its one content-type value (Envoy joins repeated lines with ",")
  is `application/grpc` or starts with `application/grpc+`, case-sensitively. The method and the
  HTTP version do not matter; `application/grpc-web`, `application/grpc;x=1` are not gRPC.
- Every answer the proxy makes itself to a gRPC call (jwt_authn, RBAC, the Lua filter's
  `respond`, the 400 and 404 routes, the connection manager's refusals) is HTTP 200 carrying
  `grpc-status`, mapped from the HTTP status: 400 → 13 INTERNAL, 401 → 16 UNAUTHENTICATED,
  403 → 7 PERMISSION_DENIED, 404 → 12 UNIMPLEMENTED. A token for another audience, which is
  refused with 403, is mapped to 16 by the emitted listener (`envoy.grpc_local_replies`): a token
  failure is UNAUTHENTICATED to a gRPC client, whatever it was.
- The HTTP/1 codec's refusals come before any header is read, and stay plain HTTP answers.
"""

from __future__ import annotations

from collections.abc import Mapping

GRPC_CONTENT_TYPE = "application/grpc"
UNAUTHENTICATED = 16
GRPC_STATUS_OF_HTTP = {400: 13, 401: UNAUTHENTICATED, 403: 7, 404: 12}
# Refusals made before the request's headers are read (the `detail` of a bad-request decision).
_CODEC_REFUSALS = ("http1.", "low_version", "http.invalid_authority")


def is_grpc_call(headers: Mapping[str, tuple[str, ...]]) -> bool:
    """Whether the proxy treats a request with these headers (`header_table`'s) as a gRPC call."""
    values = headers.get("content-type", ())
    return len(values) == 1 and (values[0] == GRPC_CONTENT_TYPE or values[0].startswith(GRPC_CONTENT_TYPE + "+"))


def grpc_status(status: int, reason: str, detail: str) -> int | None:
    """The grpc-status a gRPC call's client reads for the proxy's answer `status` (None when the
    upstream answers, or the codec refused the request before reading its headers)."""
    if status not in GRPC_STATUS_OF_HTTP or (reason == "bad-request" and detail.startswith(_CODEC_REFUSALS)):
        return None
    return UNAUTHENTICATED if reason == "forbidden" else GRPC_STATUS_OF_HTTP[status]
