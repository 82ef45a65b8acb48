"""Which service Envoy routes a request to: takes the Host header lines as sent (or the authority
of an absolute-form target), the other header lines and the services' hosts, and returns the
service, None for the 404 catch-all, or the `Rejected` answer Envoy gives before any policy
filter: its own, or a refusal route's (`refusal_route`).

Observed on Envoy 1.40 with one virtual host per service (`domains` = its hosts) and a `*`
catch-all answering 404 (tests/envoy/test_paths_envoy.py):
- Matching is exact after ASCII lower-casing both sides: "PAYMENTS.Internal" finds
  "payments.internal", and the upstream still receives the Host as sent.
- Nothing else is forgiven: a trailing dot ("payments.internal."), a port the service does not list
  (":80", even the scheme's default), a zero-padded port (":08443"), an empty port ("host:") and
  userinfo ("u@host") all fall through to the catch-all (404).
- Optional whitespace around a Host value is dropped. Host lines are joined with "," (empty
  values skipped), so two non-empty Host lines, even identical ones, never match a service (404).
- No Host line at all on HTTP/1.1: 400 (missing_host_header). An empty Host value is present:
  404. A Host outside the authority characters (space, '/', '?', '#', '\\', non-ASCII): 400.
- An absolute-form target ("http://h:p/x") replaces the Host lines entirely, even invalid ones.
"""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

from .headers import codec_headers, overridden, upgrade_refused
from .paths import PATH_PARAMETERS, Received, Rejected, Target, normalize_path, parse_target

# RFC 3986 authority characters, the set Envoy checks :authority against (http.invalid_authority).
AUTHORITY_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:@[]")


@dataclass(frozen=True)
class Admitted:
    """A request Envoy hands to the policy filters: its normalized target, :authority, service
    and header lines (Host aside) as the codec left them."""

    target: Target
    authority: str
    service: str | None  # None: the catch-all virtual host answers 404
    headers: tuple[tuple[str, str], ...] = ()


def admit_request(
    method: str,
    target: str,
    host_values: Sequence[str],
    hosts_by_service: Mapping[str, Sequence[str]],
    version: str = "HTTP/1.1",
    headers: Sequence[tuple[str, str]] = (),
    parameters_allowed: Collection[str] = (),
) -> Admitted | Rejected:
    """Envoy's checks in Envoy's order: the codec's request line (400), then its header lines
    (400: `_` in a name, a bad `Connection`), the HTTP version (426), the authority (400), the
    missing Host (400), the non-relative path (404), path normalization (400), an upgrade it does
    not serve (403), then routing and the refusal routes of the virtual host it picked (400).
    The order matters: OPTIONS * without a Host is 400, not 404. `headers` are the lines besides
    `host_values`; `parameters_allowed` names the services that take `;` path parameters."""
    received = _parsed_target(target, method, version)
    # The codec judges the version only once the header lines are read, unless the request line
    # had none at all (HTTP/0.9), which ends the request there.
    if isinstance(received, Rejected) and (received.status != 426 or "\n" in target):
        return received
    lines = codec_headers([("host", value) for value in host_values] + list(headers))
    if isinstance(lines, Rejected):
        return lines
    if isinstance(received, Rejected):
        return received
    authority = received.authority
    if authority is None:
        authority = host_header([value for name, value in lines if name.lower() == "host"])
    if authority is None:
        return Rejected(400, "missing_host_header")
    others = tuple((name, value) for name, value in lines if name.lower() != "host")
    return admit_received(received, authority, others, hosts_by_service, parameters_allowed, upgrade_refused(lines))


def admit_received(received: Received, authority: str, headers: tuple[tuple[str, str], ...],
                   hosts_by_service: Mapping[str, Sequence[str]], parameters_allowed: Collection[str],
                   upgrade: bool = False) -> Admitted | Rejected:
    """What follows the codec, for either protocol: the authority check, path normalization, an
    upgrade the proxy does not serve, routing and the refusal routes. `headers` are the header
    lines (or HTTP/2 fields) but Host."""
    if not set(authority) <= AUTHORITY_CHARACTERS:
        return Rejected(400, "http.invalid_authority")
    target_seen = _target_seen(received.path_value, received.authority)
    if isinstance(target_seen, Rejected):
        return target_seen
    if upgrade:
        return Rejected(403, "upgrade_failed")
    service = match_host(authority, hosts_by_service)
    refused = refusal_route(target_seen.path, headers, service in parameters_allowed)
    return refused or Admitted(target_seen, authority, service, headers)


def refusal_route(path: str, headers: Sequence[tuple[str, str]], parameters_allowed: bool) -> Rejected | None:
    """What the routes first in every virtual host (backends/envoy.py) answer before any policy
    filter: 400 for `;` path parameters, unless the service allows them, and for a URL- or
    method-override header. (The dot segments that keep parameters are refused by such a route
    too; `normalize_path` models that one, since it needs the path before normalization.)"""
    if not parameters_allowed and PATH_PARAMETERS.search(path):
        return Rejected(400, "path_parameters")
    if overridden(headers):
        return Rejected(400, "override_header")
    return None


# Both stages are pure functions of their text, and a request-target is read character by
# character: clients repeat the same targets, so their readings are kept.
_parsed_target = lru_cache(maxsize=4096)(parse_target)


@lru_cache(maxsize=4096)
def _target_seen(path_value: str, authority: str | None) -> Target | Rejected:
    normalized = normalize_path(path_value)
    return normalized if isinstance(normalized, Rejected) else replace(normalized, authority=authority)


def host_header(values: Sequence[str]) -> str | None:
    """The :authority Envoy's HTTP/1 codec builds from the Host lines in arrival order: each value
    trimmed of SP/HT, empty ones skipped, the rest joined with ","; None without any Host line."""
    if not values:
        return None
    return ",".join(trimmed for value in values if (trimmed := value.strip(" \t")))


def match_host(authority: str, hosts_by_service: Mapping[str, Sequence[str]]) -> str | None:
    """The service whose hosts contain `authority` up to ASCII case, or None (catch-all 404).
    Envoy refuses a config that lists one host in two virtual hosts, so at most one matches."""
    wanted = _ascii_lower(authority)
    for service, hosts in hosts_by_service.items():
        if wanted in _lowered(tuple(hosts)):
            return service
    return None


@lru_cache(maxsize=65536)
def _lowered(hosts: tuple[str, ...]) -> frozenset[str]:
    return frozenset(map(_ascii_lower, hosts))


def _ascii_lower(text: str) -> str:
    # Envoy lower-cases with absl::AsciiStrToLower: non-ASCII letters keep their case.
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


_HOST_NAME = re.compile(r"([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\Z")


def split_port(authority: str) -> tuple[str, str | None]:
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        return host, (rest[1:] if rest.startswith(":") else None if not rest else "")
    host, sep, port = authority.rpartition(":") if ":" in authority else (authority, "", None)
    return host, port if sep else None


def _port_ok(port: str | None) -> bool:
    return port is None or (port.isdigit() and 0 < int(port) < 65536 and port == str(int(port)))


def host_problem(host: str) -> str | None:
    """Why `host` cannot be matched as an `:authority` (lower-case name or IP, optional port)."""
    name, port = split_port(host)
    if host != host.lower():
        return "must be lower-case (the proxy matches hosts without regard to case)"
    if not _port_ok(port):
        return "has a bad port"
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return "is not a valid IPv6 address"
        return None
    if not _HOST_NAME.match(name):
        return "is not a host name or IPv4 address"
    return None


def upstream_problem(address: str) -> str | None:
    name, port = split_port(address)
    if port is None or not port or not _port_ok(port):
        return "needs a port from 1 to 65535"
    if address.startswith("["):
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return "is not a valid IPv6 address"
        return None
    return None if _HOST_NAME.match(name.lower()) else "is not a host name or IP address"
