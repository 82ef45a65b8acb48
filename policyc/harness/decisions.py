"""Reads a decision back from one line of the emitted JSON access log: which rule decided and
why, from the RBAC filters' metadata, the Lua filter's record and the response details.

`logged_decision(entry)` returns (reason, rule) in the interpreter's vocabulary (see
`interpret.request.Decision`), so that Envoy and the interpreter can be compared field by field.
"""

from __future__ import annotations

from ..backends.envoy import WRONG_AUDIENCE

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
    rbac, lua = entry.get("rbac") or {}, entry.get("lua") or {}
    deny = _rbac(rbac, "deny_")
    if deny is not None and deny[0] == "denied":
        return "deny", deny[1]
    if lua.get("decision") in ("deny", "allow", "default-deny", "error"):
        return lua["decision"], lua.get("rule")
    allow = _rbac(rbac, "allow_")
    if allow is not None:
        return ("allow", allow[1]) if allow[0] == "allowed" else ("default-deny", None)
    return "unknown", None
