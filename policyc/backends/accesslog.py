"""The access log's contract: what each JSON line holds, and how a decision is read back from it.

`access_log_fields(checked)` is the `json_format` the listener logs with (the request, the
answer, the caller, each policy filter's record, each issuer's token failure), and the names of
the records the filters write are defined here too. `logged_decision(entry)` reads one line back
as (reason, rule) in the interpreter's vocabulary (see `semantics.request.Decision`): which rule
decided and why, from the RBAC filters' metadata, the Lua filter's record and the response
details. `policyc audit`, the differential proof and the tests all read the log through it.
"""

from __future__ import annotations

from ..checked import Checked
from .resolve import JWT_FILTER, PAYLOAD_KEY

# The names the log reads the filters' records by, which the listener's filters are given.
ROUTE_NAMESPACE = "policyc"  # route metadata: mode, policy version
LUA_NAMESPACE = "policyc"  # the Lua filter's dynamic metadata: decision, rule (lua_runtime/decide.lua)
# The native filter's filter state: "<decision>" or "<decision> <rule>" (native_runtime/policy_filter.c).
NATIVE_VERDICT_KEY = "policyc.verdict"
DENY_STAT_PREFIX, ALLOW_STAT_PREFIX = "deny_", "allow_"  # the RBAC filters' metadata keys start so
TOKEN_FAILURE_PREFIX = "jwt_failure_"  # + issuer name: each provider records its own failure
WRONG_AUDIENCE = "Audiences in Jwt are not allowed"  # jwt_authn's failure message, answered 403


ACCESS_LOG_FIELDS = {
    "time": "%START_TIME%",
    # What joins a line to the application's logs: Envoy's request id (the caller's, or generated)
    # and the W3C trace context the tracer (envoy.py, `tracing`) reads or starts and passes upstream.
    "request_id": "%REQ(X-REQUEST-ID)%",
    "trace_id": "%TRACE_ID%",
    "traceparent": "%REQ(TRACEPARENT)%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(:PATH)%",
    "authority": "%REQ(:AUTHORITY)%",
    "source": "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%",
    "status": "%RESPONSE_CODE%",
    # A gRPC call's refusal is HTTP 200 on the wire: its grpc-status says what it was.
    "grpc_status": "%GRPC_STATUS(NUMBER)%",
    "details": "%RESPONSE_CODE_DETAILS%",
    # A service's routes are named for it; a refusal route or the catch-all has no name. Envoy
    # writes the name for about 700 instructions a request, a field of the route's metadata for
    # about 4,800 (bench/instructions.py).
    "service": "%ROUTE_NAME%",
    "mode": f"%METADATA(ROUTE:{ROUTE_NAMESPACE}:mode)%",
    "policy_version": f"%METADATA(ROUTE:{ROUTE_NAMESPACE}:version)%",
    "issuer": f"%DYNAMIC_METADATA({JWT_FILTER}:{PAYLOAD_KEY}:iss)%",
    "sub": f"%DYNAMIC_METADATA({JWT_FILTER}:{PAYLOAD_KEY}:sub)%",
    "rbac": "%DYNAMIC_METADATA(envoy.filters.http.rbac)%",
    "lua": f"%DYNAMIC_METADATA({LUA_NAMESPACE})%",
    "native": f"%FILTER_STATE({NATIVE_VERDICT_KEY}:PLAIN)%",
    "upstream": "%UPSTREAM_HOST%",
    "duration_ms": "%DURATION%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
}


# The client certificate's identity, logged when the listener verifies client certificates.
PEER_LOG_FIELDS = {"peer": "%DOWNSTREAM_PEER_URI_SAN%", "peer_subject": "%DOWNSTREAM_PEER_SUBJECT%"}


def access_log_fields(checked: Checked) -> dict:
    """The JSON access log: the request, the answer, the caller (and the client certificate that
    named it), each filter's decision, and the token failure each issuer recorded (what a dry-run
    service let through)."""
    fields = {**ACCESS_LOG_FIELDS, **(PEER_LOG_FIELDS if checked.trusts else {})}
    failures = {name: f"%DYNAMIC_METADATA({JWT_FILTER}:{TOKEN_FAILURE_PREFIX}{name})%" for name in checked.issuers}
    return {**fields, "token_errors": failures} if failures else fields


# How the access log's details name a token refused for its audience (403, or grpc-status 16).
_WRONG_AUDIENCE_DETAILS = WRONG_AUDIENCE.replace(" ", "_")


def _rule(policy_id: str | None) -> str | None:
    return policy_id.split("/", 1)[1] if policy_id else None


def _rbac(metadata: dict, prefix: str) -> tuple[str, str | None] | None:
    """(result, rule) of one RBAC filter, enforced or shadow, if it ran."""
    for mode in ("enforced", "shadow"):
        result = metadata.get(f"{prefix}{mode}_engine_result")
        if result is not None:
            return result, _rule(metadata.get(f"{prefix}{mode}_effective_policy_id"))
    return None


# What providers record when the request simply had no token, or one of another issuer.
_NOT_A_FAILURE = {"Jwt is missing", "Jwt issuer is not configured"}


def _token_failure(failures: dict) -> str | None:
    """unauthenticated / forbidden for the failure the proxy would have answered, or None."""
    messages = {str(f.get("message")) for f in failures.values() if isinstance(f, dict)}
    if not messages or messages == {"Jwt is missing"}:
        return None
    real = messages - _NOT_A_FAILURE
    return "forbidden" if real == {WRONG_AUDIENCE} else "unauthenticated"


_FILTER_DECISIONS = ("deny", "allow", "default-deny", "error")


def native_verdict(text: str) -> tuple[str, str | None]:
    """(decision, rule) of the native filter's record, "<decision>" or "<decision> <rule>"."""
    decision, _, rule = text.partition(" ")
    return decision, rule or None


def _filter_verdict(entry: dict) -> tuple[str, str | None] | None:
    """(decision, rule) the Lua or the native filter recorded, if one decided."""
    lua, native = entry.get("lua") or {}, entry.get("native")
    recorded = [(lua.get("decision"), lua.get("rule")), native_verdict(native) if isinstance(native, str) else None]
    return next((r for r in recorded if r is not None and r[0] in _FILTER_DECISIONS), None)


def logged_decision(entry: dict) -> tuple[str, str | None]:
    details = entry.get("details") or ""
    status = int(entry.get("status") or 0)
    if not status:  # the HTTP/2 codec reset the stream: no answer, no route
        return "reset", None
    # A gRPC call's refusal is logged with status 200: its grpc-status tells the 404 apart.
    not_found = status == 404 or str(entry.get("grpc_status")) == "12"
    if details.startswith("jwt_authn_access_denied"):
        return ("forbidden" if _WRONG_AUDIENCE_DETAILS in details else "unauthenticated"), None
    if not entry.get("issuer"):  # no provider verified a token: did one refuse it?
        reason = _token_failure(entry.get("token_errors") or {})
        if reason is not None:  # a dry-run service let a bad token through
            return reason, None
    if not entry.get("service") or details == "upgrade_failed":
        # The catch-all virtual host answers 404; any other answer without a service is the proxy
        # refusing the request itself (codec, Host, path normalization, refusal routes), and so is
        # an upgrade it does not serve, refused once a route (and its service) was chosen.
        return ("no-service" if not_found and details == "direct_response" else "bad-request"), None
    rbac = entry.get("rbac") or {}
    deny = _rbac(rbac, DENY_STAT_PREFIX)
    if deny is not None and deny[0] == "denied":
        return "deny", deny[1]
    decided = _filter_verdict(entry)
    if decided is not None:
        return decided
    allow = _rbac(rbac, ALLOW_STAT_PREFIX)
    if allow is not None:
        return ("allow", allow[1]) if allow[0] == "allowed" else ("default-deny", None)
    return "unknown", None
