"""Envoy assembly: a checked policy set and per-service targets → the complete bootstrap and each
service's filter configs, as plain dicts. For hot reloads, the same policy as discovery responses
(clusters, listener, routes) and a bootstrap that takes all three from a watched folder.

One HTTP connection manager: jwt_authn (every issuer, anonymous callers pass), then an RBAC
filter for deny rules, the Lua filter, the native filter (only when a service is compiled for
it: one dynamic-module filter whose config holds every such service; the Lua filter is then
left out unless a service uses it), an RBAC filter for allow rules, and the router.
Each service is a virtual host that switches on the filters it needs through per-route configs;
the catch-all virtual host answers 404 with every policy filter off.
When a native service tests a certificate's SANs, the native module's network filter, which
records them on each connection, comes before the connection manager.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, replace
from functools import partial

from cryptography.hazmat.primitives import serialization

from .. import nodes as n
from ..checked import Checked
from ..semantics.headers import OVERRIDE_HEADERS, PAYLOAD_HEADER, value_tested_headers
from ..semantics.hosts import split_port
from ..semantics.paths import DOT_SEGMENT_PARAMETERS, KNOWN_METHODS, PATH_PARAMETERS
from . import lua, native, rbac
from .accesslog import (
    ALLOW_STAT_PREFIX,
    DENY_STAT_PREFIX,
    ROUTE_NAMESPACE,
    TOKEN_FAILURE_PREFIX,
    WRONG_AUDIENCE,
    access_log_fields,
)
from .resolve import JWT_FILTER, PAYLOAD_KEY, route_shares

LISTENER_NAME = "policyc"
DENY_FILTER = "policyc.rbac.deny"
LUA_FILTER = "policyc.lua"
NATIVE_FILTER = "policyc.native"
# The native filter's library, lib<name>.so, which Envoy looks for in the folders of
# $ENVOY_DYNAMIC_MODULES_SEARCH_PATH (native_runtime/README.md): a name, not a path, keeps the
# emitted config the same on every machine.
NATIVE_MODULE = "policyc_native"
NATIVE_SEARCH_PATH = "ENVOY_DYNAMIC_MODULES_SEARCH_PATH"
NATIVE_FILTER_NAME = "policy"  # which filter of the module: the one deciding policies
PEER_FILTER = "policyc.peer_sans"
PEER_FILTER_NAME = "peer_sans"  # the module's network filter, recording a certificate's SANs
ALLOW_FILTER = "policyc.rbac.allow"
# The policy filters a chain may hold beside the native one, in chain order, by the names the
# native filter's config and routes give them (native_runtime/policy_index.h, CHAIN_*).
CHAIN_NAMES = {DENY_FILTER: "rbac-deny", LUA_FILTER: "lua", ALLOW_FILTER: "rbac-allow"}
ENFORCE, DRY_RUN = "enforce", "dry-run"  # jwt_authn requirement names
OVERRIDE_CLUSTER = "upstream"
OTLP_CLUSTER = "policyc_otlp"

_TYPES = {
    "hcm": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "jwt": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
    "jwt_route": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig",
    "rbac": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
    "rbac_route": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
    "lua": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
    "lua_route": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute",
    "dynamic_module": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
    "dynamic_module_route":
        "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute",
    "network_dynamic_module":
        "type.googleapis.com/envoy.extensions.filters.network.dynamic_modules.v3.DynamicModuleNetworkFilter",
    "string": "type.googleapis.com/google.protobuf.StringValue",
    "router": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
    "file_log": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
    "tls": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
    "downstream_tls": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
    "listener": "type.googleapis.com/envoy.config.listener.v3.Listener",
    "filter_config": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
    "routes": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    "cluster": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "http_protocol": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "otel": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
    "otel_log": "type.googleapis.com/envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig",
    "route": "type.googleapis.com/envoy.config.route.v3.Route",
    "route_list": "type.googleapis.com/envoy.config.route.v3.RouteList",
    "header_input": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
}
ROUTE_CONFIG_NAME = "policyc"
HCM_STAT_PREFIX = "policyc"  # the connection manager's stats: http.<prefix>.…
# The files of a watched folder, by resource kind; published in this order (clusters before the
# routes that name them, routes before the listener that asks for them).
DYNAMIC_FILES = {"cluster": "cds.yaml", "routes": "rds.yaml", "listener": "lds.yaml"}


@dataclass(frozen=True)
class Plan:
    """Which engine enforces a service's deny rules and its allow rules. The native filter
    decides a service whole: "native" is both or neither."""

    deny: str  # "rbac", "lua" or "native"
    allow: str

    def __str__(self) -> str:
        return self.deny if self.deny == self.allow else f"deny {self.deny}, allow {self.allow}"


# Envoy tries a host's listed routes in turn, about 240 instructions each; the matcher costs a
# request the same whatever their number, as much as about 32 of them (README.md, *Performance*).
PREFIX_MAP_FROM = 32


@dataclass(frozen=True)
class Options:
    listen: str = "127.0.0.1:10000"
    admin: str = "127.0.0.1:9901"
    access_log: str = "/dev/stdout"
    upstream_override: str | None = None  # send every service to this address (test upstreams)
    upstream_override_protocol: n.UpstreamProtocol = n.UpstreamProtocol.HTTP1  # what that address speaks
    jwks_refresh_seconds: int = 10  # how often a remote JWKS is fetched again (Envoy's floor is 1)
    otlp: str | None = None  # an OpenTelemetry collector (host:port, OTLP over gRPC) that spans go to
    # A service host with at least this many path-prefix routes finds a request's route by a
    # prefix map rather than trying them one by one (`route_matcher`).
    prefix_map_from: int = PREFIX_MAP_FROM

    def cluster_of(self, service: n.Service) -> str:
        # With one override address every service shares one cluster, so a listener reloaded
        # with other services still finds its cluster.
        return OVERRIDE_CLUSTER if self.upstream_override else f"service_{service.name}"


def socket_address(address: str) -> dict:
    host, port = split_port(address)
    return {"socket_address": {"address": host, "port_value": int(port)}}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def cluster(name: str, address: str, tls_host: str | None = None,
            protocol: n.UpstreamProtocol = n.UpstreamProtocol.HTTP1) -> dict:
    host, port = split_port(address)
    cluster = {
        "name": name,
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}}]}]},
    }
    if protocol is n.UpstreamProtocol.HTTP2:  # HTTP/2 with prior knowledge, in the clear (h2c)
        cluster["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": _TYPES["http_protocol"], "explicit_http_config": {"http2_protocol_options": {}}}}
    if tls_host is not None:
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": _TYPES["tls"], "sni": tls_host,
            "common_tls_context": {"validation_context": {
                "trusted_ca": {"filename": "/etc/ssl/certs/ca-certificates.crt"},
                "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": tls_host}}]}}}}
    return cluster


def _jwks_cluster(issuer: n.Issuer) -> tuple[str, dict]:
    """The cluster the proxy fetches a remote JWKS through (TLS with SNI unless loopback http)."""
    scheme, rest = issuer.jwks.uri.split("://", 1)
    authority = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    host, port = split_port(authority)
    port = port or ("443" if scheme == "https" else "80")
    name = f"jwks_{issuer.name}"
    address = f"[{host.strip('[]')}]:{port}" if ":" in host.strip("[]") else f"{host}:{port}"
    return name, cluster(name, address, host.strip("[]") if scheme == "https" else None)


def _provider(checked: Checked, issuer: n.Issuer, options: Options, forward_payload: bool) -> dict:
    provider = {
        "issuer": issuer.url,
        "from_headers": [{"name": "Authorization", "value_prefix": "Bearer "}],
        "forward": True,
        "payload_in_metadata": PAYLOAD_KEY,
        "failed_status_in_metadata": TOKEN_FAILURE_PREFIX + issuer.name,
        "require_expiration": True,
        "jwt_cache_config": {"jwt_cache_size": 1000},
    }
    if forward_payload:
        # The native filter reads the claims from this header (a module cannot read inside the
        # metadata Struct). jwt_authn removes it from every request before verifying and sets it
        # only for the token it verified.
        provider["forward_payload_header"] = PAYLOAD_HEADER
    if issuer.audiences:
        provider["audiences"] = list(issuer.audiences)
    if issuer.name in checked.keys:  # `jwks file`, read when compiling (or keys a test supplies)
        keys = json.dumps(checked.keys[issuer.name], sort_keys=True, separators=(",", ":"))
        provider["local_jwks"] = {"inline_string": keys}
    else:
        cluster, _ = _jwks_cluster(issuer)
        provider["remote_jwks"] = {
            "http_uri": {"uri": issuer.jwks.uri, "cluster": cluster, "timeout": "5s"},
            # Envoy never refetches on an unknown `kid`: a token signed by a freshly rotated key is
            # refused until the next fetch, so fetch often. The fetch runs on the main thread in
            # the background (`async_fetch`), keeps the last good keys when it fails, and retries.
            "cache_duration": f"{options.jwks_refresh_seconds}s",
            "async_fetch": {"failed_refetch_duration": "1s"},
            "retry_policy": {"num_retries": 3, "retry_back_off": {"base_interval": "0.2s", "max_interval": "2s"}},
        }
    return provider


def _jwt_filter(checked: Checked, options: Options, forward_payload: bool) -> dict:
    """Every issuer a provider; anonymous callers pass. A bad token is refused (401, or 403 for a
    wrong audience), except on dry-run services, which let it through and record the failure.
    `forward_payload`: the verified payload goes to the native filter in a header."""
    providers = {name: _provider(checked, issuer, options, forward_payload)
                 for name, issuer in sorted(checked.issuers.items())}
    names = [{"provider_name": name} for name in providers]
    requirements = {
        ENFORCE: {"requires_any": {"requirements": names + [{"allow_missing": {}}]}},
        DRY_RUN: {"requires_any": {"requirements": names + [{"allow_missing_or_failed": {}}]}},
    }
    return {"name": JWT_FILTER, "typed_config": {
        "@type": _TYPES["jwt"], "providers": providers, "requirement_map": requirements,
        "rules": [{"match": {"prefix": "/"}, "requirement_name": ENFORCE}]}}


def _native_filter(config: str) -> dict:
    """The native filter with its config text (backends/native.py); every virtual host turns it
    off and its service routes back on (`_virtual_host`)."""
    return {"name": NATIVE_FILTER, "typed_config": {
        "@type": _TYPES["dynamic_module"], "dynamic_module_config": {"name": NATIVE_MODULE},
        "filter_name": NATIVE_FILTER_NAME, "filter_config": {"@type": _TYPES["string"], "value": config}}}


# The native module's network filter (native_runtime/peer_filter.c): it stores every SAN of the
# client certificate in the connection's filter state, where the native filter reads them; an HTTP
# filter is given only the first of each kind.
_PEER_FILTER = {"name": PEER_FILTER, "typed_config": {
    "@type": _TYPES["network_dynamic_module"], "dynamic_module_config": {"name": NATIVE_MODULE},
    "filter_name": PEER_FILTER_NAME}}


def _rbac_filter(name: str, stat_prefix: str) -> dict:
    """An RBAC filter of no rules of its own: its routes' configs give them."""
    return {"name": name, "typed_config": {"@type": _TYPES["rbac"], "rules_stat_prefix": stat_prefix,
                                           "shadow_rules_stat_prefix": stat_prefix}}


def _http_filters(checked: Checked, options: Options, service_filters: dict[str, ServiceFilters]) -> list[dict]:
    """The chain. Without the native filter it is the same whatever the rules, so that a change
    of rules replaces only the routes (docs/operations.md). With it, whose config is in the
    listener anyway, it holds the RBAC and Lua filters only when a service the native filter does
    not decide relies on them, since every filter in the chain costs each request something even
    when a route turns it off; the native filter then runs on every service's route, and lets a
    route of such a service on only if this chain holds the filters it relies on (`_relied_on`)."""
    native_config = native_filter_config(service_filters, bool(checked.issuers))
    fixed = native_config is None
    kept = set(CHAIN_NAMES) if fixed else _chain(service_filters)
    # With no `rules`, an RBAC filter enforces nothing: hosts without a per-route config pass.
    filters = [
        *([_jwt_filter(checked, options, not fixed)] if checked.issuers else []),
        *([_rbac_filter(DENY_FILTER, DENY_STAT_PREFIX)] if DENY_FILTER in kept else []),
        *([{"name": LUA_FILTER, "typed_config": {"@type": _TYPES["lua"]}}] if LUA_FILTER in kept else []),
        *([_native_filter(native_config)] if not fixed else []),
        *([_rbac_filter(ALLOW_FILTER, ALLOW_STAT_PREFIX)] if ALLOW_FILTER in kept else []),
    ]
    return [*filters, {"name": "envoy.filters.http.router", "typed_config": {"@type": _TYPES["router"]}}]


@dataclass(frozen=True)
class ServiceFilters:
    """One service's filter configs; None where that filter stays off. `rbac_deny` and
    `rbac_allow` hold all its rules; `rbac_by_prefix` the same split by path prefix: a request
    goes to the route of the longest prefix its path has, whose configs hold only the rules
    that can match such a path, so RBAC does not try every rule of a large service."""

    rbac_deny: dict | None
    lua_source: str | None
    rbac_allow: dict | None
    rbac_by_prefix: dict[str, tuple[dict | None, dict | None]]
    native_section: str | None  # its section of the native filter's config
    native_sans: bool = False  # that section tests a certificate's SANs


def _relied_on(filters: ServiceFilters) -> list[str]:
    """The policy filters besides the native one whose configs a service's routes carry, in chain
    order; none for a native service (its allow RBAC config is for a chain without the native
    filter: see `_rbac_configs`)."""
    if filters.native_section is not None:
        return []
    configs = {DENY_FILTER: filters.rbac_deny, LUA_FILTER: filters.lua_source, ALLOW_FILTER: filters.rbac_allow}
    return [name for name in CHAIN_NAMES if configs[name] is not None]


def _chain(service_filters: dict[str, ServiceFilters]) -> set[str]:
    """The policy filters a chain holding the native filter needs beside it."""
    return {name for filters in service_filters.values() for name in _relied_on(filters)}


def native_filter_config(service_filters: dict[str, ServiceFilters], has_issuers: bool) -> str | None:
    """The native filter's listener config: the filters beside it in the chain, jwt_authn first
    when there are issuers (a native service's rules that read a token are decided `error`
    through a chain without it: routes and listener may come from two policies on a hot reload);
    None when no service is native. The rules are in the routes (`native_on`)."""
    if all(f.native_section is None for f in service_filters.values()):
        return None
    chain = _chain(service_filters)
    return native.listener_config((*(["jwt"] if has_issuers else []),
                                   *(CHAIN_NAMES[name] for name in CHAIN_NAMES if name in chain)))


_OFF = {"@type": _TYPES["filter_config"], "disabled": True}  # any filter, off for a route or host


def native_on(config: str) -> dict:
    """The native filter back on for a route of a host that turns it off, with the route's config
    (native_runtime/policy_filter.c)."""
    return {"@type": _TYPES["dynamic_module_route"], "dynamic_module_config": {"name": NATIVE_MODULE},
            "filter_name": NATIVE_FILTER_NAME,
            "filter_config": {"@type": _TYPES["string"], "value": config}}


def _native_route_config(filters: ServiceFilters) -> str:
    """What a service's routes tell the native filter: the service's section, or the filters that
    decide it instead, for the filter to check that its chain holds them (`_http_filters`)."""
    if filters.native_section is not None:
        return native.route_config(filters.native_section)
    return native.relies_config(tuple(CHAIN_NAMES[name] for name in _relied_on(filters)))


def _virtual_host(service: n.Service, filters: ServiceFilters, has_issuers: bool, cluster: str,
                  version: str, padded_headers: tuple[str, ...], native_in_chain: bool, prefix_map_from: int) -> dict:
    """The service's host: its refusal routes, then a route per path prefix of its rules, longest
    first; from `prefix_map_from` such routes on, the same as a matcher (`route_matcher`). Filter
    configs go on the host where they hold for the service routes and cost the refusal routes
    nothing, since every config on a route costs Envoy memory: the native filter is off for the
    host (its refusal routes) and on for each service route."""
    per_filter = {LUA_FILTER: {"@type": _TYPES["lua_route"], "disabled": True}}
    if has_issuers and service.mode is n.Mode.DRY_RUN:
        per_filter[JWT_FILTER] = {"@type": _TYPES["jwt_route"], "requirement_name": DRY_RUN}
    if filters.lua_source is not None:
        per_filter[LUA_FILTER] = {"@type": _TYPES["lua_route"], "source_code": {"inline_string": filters.lua_source}}
    if native_in_chain:
        per_filter[NATIVE_FILTER] = _OFF
    answering = _answering_first(has_issuers, filters.lua_source is not None)
    metadata = _route_metadata(version, mode=service.mode.value)
    native_route = native_on(_native_route_config(filters)) if native_in_chain else None
    routes = []
    for prefix, configs in filters.rbac_by_prefix.items():
        route_configs = {name: {"@type": _TYPES["rbac_route"], "rbac": config}
                         for name, config in zip((DENY_FILTER, ALLOW_FILTER), configs, strict=True) if config}
        if native_route is not None:
            route_configs[NATIVE_FILTER] = native_route
        # Named for the service, which the access log reads from the name (accesslog.py).
        route = {"name": service.name, "match": {"prefix": prefix}, "route": {"cluster": cluster}, "metadata": metadata}
        routes.append({**route, "typed_per_filter_config": route_configs} if route_configs else route)
    refusals = refusal_routes(service.path_parameters, padded_headers, answering)
    host = {"name": service.name, "domains": sorted(service.hosts), "typed_per_filter_config": per_filter}
    if len(routes) >= prefix_map_from:
        return {**host, "matcher": route_matcher(refusals, routes)}
    return {**host, "routes": [*refusals, *routes]}


def _header_input(name: str) -> dict:
    return {"name": name, "typed_config": {"@type": _TYPES["header_input"], "header_name": name}}


def _value_passes(header: str, string_match: dict) -> dict:
    """A matcher's predicate: the header's value passes `string_match`; false without the header.
    Exact for a header a request carries once: a matcher reads all of a header's values joined by
    commas, where a route's header matcher tests each value."""
    if "safe_regex" in string_match:  # a matcher's regex names its engine
        string_match = {"safe_regex": {"google_re2": {}, **string_match["safe_regex"]}}
    return {"single_predicate": {"input": _header_input(header), "value_match": string_match}}


_PRESENT = {"safe_regex": {"regex": "(?s).*"}}  # any value, the empty one included


def _header_predicate(header: dict) -> dict | None:
    """A route's header matcher as a predicate, or None where none tests the same: a value test
    on a header other than a pseudo-header, which a request may carry more than once."""
    if not set(header) <= {"name", "present_match", "string_match", "invert_match"}:
        raise ValueError(f"no matcher predicate for the header match {header!r}")
    if header.get("present_match"):
        return _value_passes(header["name"], _PRESENT)
    if not header["name"].startswith(":"):
        return None
    test = _value_passes(header["name"], header["string_match"])
    # Inverted, a route's header matcher still needs the header: Envoy 1.40 does not match a
    # missing one so. (A failing predicate is no fall-through: Envoy checks the route's own match
    # again, and with it failing, the request has no route.)
    return {"and_matcher": {"predicate": [_value_passes(header["name"], _PRESENT), {"not_matcher": test}]}} \
        if header.get("invert_match") else test


def _predicate(match: dict) -> dict | None:
    """A refusal route's `match` as a matcher's predicate on the same request, or None where no
    predicate tests exactly the same (`_header_predicate`). Only the forms `refusal_routes`
    writes are translated; any other is an error, not a guess."""
    if set(match) == {"safe_regex"}:
        # A route's regex `.*X.*` tests the path before its query and fragment (the first `?` or
        # `#`): it has X and no newline. The predicate reads the whole :path, so it finds X before
        # them. Exact while X itself matches no `?`, `#` or newline (paths.py's patterns).
        regex = match["safe_regex"]["regex"]
        if not (regex.startswith(".*") and regex.endswith(".*")):
            raise ValueError(f"no matcher predicate for the path regex {regex!r}")
        path = f"[^?#\n]*(?:{regex[2:-2]})[^?#\n]*(?:[?#](?s:.*))?"
        return _value_passes(":path", {"safe_regex": {"regex": path}})
    if set(match) != {"prefix", "headers"}:
        raise ValueError(f"no matcher predicate for the route match {match!r}")
    tests = [_value_passes(":path", {"prefix": match["prefix"]}), *map(_header_predicate, match["headers"])]
    return None if None in tests else {"and_matcher": {"predicate": tests}}


def _route_action(route: dict) -> dict:
    return {"action": {"name": "route", "typed_config": {"@type": _TYPES["route"], **route}}}


def _routes_action(routes: list[dict]) -> dict:
    """The first of `routes` whose own match holds; no route where none does."""
    return {"action": {"name": "routes", "typed_config": {"@type": _TYPES["route_list"], "routes": routes}}}


def route_matcher(refusals: list[dict], routes: list[dict]) -> dict:
    """A host's routes as Envoy's matcher tree, the routes it picks the same as listed: the first
    refusal route whose match holds, else the route of the longest prefix in a map over :path.
    The prefixes are looked up in the whole :path, query included, as a route's `prefix` is
    matched, so the map picks the route that trying the routes longest first does, at a cost that
    does not grow with their number. The refusal routes become the matcher's predicates up to the
    first one no predicate tests exactly (`_predicate`); that one and those after it go with each
    prefix's route, tried in order before it as listed routes are."""
    predicates = [_predicate(refusal["match"]) for refusal in refusals]
    ahead = predicates.index(None) if None in predicates else len(refusals)
    behind = refusals[ahead:]
    prefix_map = {route["match"]["prefix"]: _routes_action([*behind, route]) if behind else _route_action(route)
                  for route in routes}
    tree = {"matcher_tree": {"input": _header_input(":path"), "prefix_match_map": {"map": prefix_map}}}
    if not ahead:
        return tree
    refusing = [{"predicate": predicate, "on_match": _route_action(refusal)}
                for predicate, refusal in zip(predicates[:ahead], refusals[:ahead], strict=True)]
    return {"matcher_list": {"matchers": refusing}, "on_no_match": {"matcher": tree}}


def _alternations(words: list[str], limit: int) -> list[str]:
    """`a|b|c` regular expressions matching exactly `words`, each at most `limit` characters."""
    groups: list[list[str]] = [[]]
    for word in words:
        if groups[-1] and len("|".join([*groups[-1], word])) > limit:
            groups.append([])
        groups[-1].append(word)
    return ["|".join(group) for group in groups]


# A few regular expressions rather than a matcher per method: Envoy runs them in a fraction of the
# instructions, on every request. Each stays within the program size Envoy accepts by default
# (RE2's 100), so the routes load into a bootstrap that does not raise it.
_KNOWN_METHOD_REGEXES = _alternations([re.escape(method) for method in sorted(KNOWN_METHODS)], 80)


def _answering_first(has_issuers: bool, host_runs_lua: bool) -> tuple[str, ...]:
    """The policy filters a host leaves on that could answer before its refusal routes:
    jwt_authn where there are issuers (a bad token's 401), the host's Lua script."""
    return (*((JWT_FILTER,) if has_issuers else ()), *((LUA_FILTER,) if host_runs_lua else ()))


def _refusal(match: dict, reason: str, answering: tuple[str, ...]) -> dict:
    """A route answering 400 before any policy filter looks at the request; `answering`: the
    policy filters its host leaves on that could answer first, turned off here."""
    route = {"match": match, "direct_response": {"status": 400, "body": {"inline_string": reason + "\n"}}}
    return {**route, "typed_per_filter_config": dict.fromkeys(answering, _OFF)} if answering else route


def refusal_routes(parameters_allowed: bool = False, padded_headers: tuple[str, ...] = (),
                   answering: tuple[str, ...] = ()) -> list[dict]:
    """First in every virtual host: what the interpreter's request model refuses but Envoy would
    pass (semantics/hosts.py, `refusal_route`). Route matching sees the normalized path.
    `padded_headers`: the headers whose values the rules test (semantics/headers.py); HTTP/2 keeps
    the spaces and tabs around a value, which an HTTP/1 upstream drops. `answering`: the policy
    filters the host leaves on that could answer first (`_answering_first`), turned off on each
    route. The RBAC filters are left on: their configs are on service
    routes alone, and one without is no rules, which passes. No filter can let a refused request
    through: what runs here can only answer first."""
    refusal = partial(_refusal, answering=answering)
    routes = [
        # A dot segment that an application still resolves (semantics/paths.py).
        refusal({"safe_regex": {"regex": f".*{DOT_SEGMENT_PARAMETERS.pattern}.*"}}, "dot segment with parameters"),
        # HTTP/1 refuses methods outside its list, but HTTP/2 carries any token: "delete" would pass a
        # rule on DELETE and reach an application that reads methods without regard to case.
        refusal({"prefix": "/", "headers": [{"name": ":method", "invert_match": True, "string_match": {
            "safe_regex": {"regex": alternatives}}} for alternatives in _KNOWN_METHOD_REGEXES]}, "unknown method"),
        # Headers that make the application serve another URL or method (semantics/headers.py).
        *(refusal({"prefix": "/", "headers": [{"name": name, "present_match": True}]}, f"override header {name}")
          for name in OVERRIDE_HEADERS),
    ]
    if not parameters_allowed:  # `;` that servlet containers read as path parameters
        routes.append(refusal({"safe_regex": {"regex": f".*({PATH_PARAMETERS.pattern}).*"}}, "path parameters"))
    padded = {"safe_regex": {"regex": "[ \t].*|.*[ \t]"}}
    return routes + [refusal({"prefix": "/", "headers": [{"name": name, "string_match": padded}]},
                             "header value with surrounding whitespace") for name in padded_headers]


REFUSED_ROUTES = refusal_routes()  # with no tested headers: a service's, unless it allows path parameters


def _route_metadata(version: str, **fields: str) -> dict:
    """What the access log reads back per request from the route's metadata: the service's mode and
    the policy version (the service is the route's name: accesslog.py)."""
    return {"filter_metadata": {ROUTE_NAMESPACE: {**fields, "version": version}}}


def _no_service(version: str, padded_headers: tuple[str, ...], has_issuers: bool, native_in_chain: bool) -> dict:
    per_filter = {LUA_FILTER: {"@type": _TYPES["lua_route"], "disabled": True}}
    if native_in_chain:
        per_filter[NATIVE_FILTER] = _OFF
    return {
        "name": "no-service",
        "domains": ["*"],
        "routes": [*refusal_routes(False, padded_headers, _answering_first(has_issuers, host_runs_lua=False)), {
            "match": {"prefix": "/"}, "metadata": _route_metadata(version),
            "direct_response": {"status": 404, "body": {"inline_string": "no service for this host\n"}}}],
        "typed_per_filter_config": per_filter,
    }


def route_config(checked: Checked, service_filters: dict[str, ServiceFilters], options: Options,
                 version: str) -> dict:
    """Every service's virtual host and the catch-all; `version` is stamped on every route."""
    padded_headers = value_tested_headers(checked)
    native_in_chain = any(f.native_section is not None for f in service_filters.values())
    virtual_hosts = [_virtual_host(service, service_filters[name], bool(checked.issuers), options.cluster_of(service),
                                   version, padded_headers, native_in_chain, options.prefix_map_from)
                     for name, service in sorted(checked.services.items()) if name in service_filters]
    no_service = _no_service(version, padded_headers, bool(checked.issuers), native_in_chain)
    # The verified payload jwt_authn forwards to the native filter is for the filter alone: the
    # router takes it off before the request goes upstream, on every route. Whatever the target
    # and issuers: on a hot reload the old listener's jwt_authn may still forward it while these
    # routes come from a policy that has neither the native filter nor issuers.
    return {"name": ROUTE_CONFIG_NAME, "virtual_hosts": virtual_hosts + [no_service],
            "request_headers_to_remove": [PAYLOAD_HEADER]}


def _watched(config_dir: str, kind: str) -> dict:
    """A config source reading one file of `config_dir`, reloaded when a file is renamed into it."""
    return {"resource_api_version": "V3", "path_config_source": {
        "path": f"{config_dir.rstrip('/')}/{DYNAMIC_FILES[kind]}", "watched_directory": {"path": config_dir}}}


def rds(config_dir: str) -> dict:
    """The listener's routes from `config_dir`: a policy change replaces them without a drain."""
    return {"rds": {"route_config_name": ROUTE_CONFIG_NAME, "config_source": _watched(config_dir, "routes")}}


def listener(checked: Checked, routes: dict, options: Options, service_filters: dict[str, ServiceFilters]) -> dict:
    """The listener; `routes` is {"route_config": …} inline, or `rds(config_dir)`; its HTTP
    filters are those `service_filters` need (the native filter with every native service's
    section, when there is one)."""
    hcm = {
        "@type": _TYPES["hcm"],
        "stat_prefix": HCM_STAT_PREFIX,
        "codec_type": "AUTO",
        # Contract §5: one canonical path for every filter and the upstream; escaped slashes refused.
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        # `x_a` would pass a rule on `x-a` and reach CGI, PHP or WSGI applications as `x-a`:
        # refused (400 over HTTP/1, the stream reset over HTTP/2) before any filter.
        "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
        **routes,
        "http_filters": _http_filters(checked, options, service_filters),
        "tracing": tracing(options),
        "access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
            "@type": _TYPES["file_log"], "path": options.access_log,
            "log_format": {"json_format": access_log_fields(checked)}}},
            *([otlp_access_log(access_log_fields(checked))] if options.otlp is not None else [])],
    }
    mappers = grpc_local_replies(checked)["mappers"] if any(i.audiences for i in checked.issuers.values()) else []
    if any(f.native_section is not None for f in service_filters.values()):  # the native filter is in the chain
        mappers.append(NATIVE_GRPC_REFUSAL)
    if mappers:
        hcm["local_reply_config"] = {"mappers": mappers}
    peer = [_PEER_FILTER] if any(f.native_sans for f in service_filters.values()) else []
    chain = {"filters": [*peer, {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
    if checked.listener_tls is not None:
        chain["transport_socket"] = downstream_tls(checked)
    return {"name": LISTENER_NAME, "address": socket_address(options.listen), "filter_chains": [chain]}


def tracing(options: Options) -> dict:
    """Envoy's OpenTelemetry tracer, for every target alike: it reads the caller's W3C
    `traceparent`, or starts a trace when there is none, passes it upstream, and gives the access
    log its `%TRACE_ID%`. With `options.otlp` every request's span goes to that collector. Without,
    nothing is sampled, so nothing is exported: the tracer needs an exporter, and the one it is
    given names a cluster that is not defined, since no span is ever sent. (`otlp_access_log` sends
    the access log's fields to the same collector.) The hop it passes on is then marked not
    sampled (SECURITY.md says what that changes for the application's own tracing)."""
    if options.otlp is not None:
        exporter = {"grpc_service": {"envoy_grpc": {"cluster_name": OTLP_CLUSTER}, "timeout": "2s"}}
        sampling = {}
    else:
        exporter = {"http_service": {"http_uri": {"uri": "http://127.0.0.1:9/v1/traces", "cluster": OTLP_CLUSTER,
                                                  "timeout": "1s"}}}
        sampling = {"random_sampling": {"value": 0}}
    return {**sampling, "provider": {"name": "envoy.tracers.opentelemetry", "typed_config": {
        "@type": _TYPES["otel"], "service_name": LISTENER_NAME, **exporter}}}


def _any_value(value: str | dict) -> dict:
    """An OTLP AnyValue of a log field: a format string, or a map of them."""
    if isinstance(value, dict):
        return {"kvlist_value": {"values": [{"key": k, "value": _any_value(v)} for k, v in value.items()]}}
    return {"string_value": value}


def otlp_access_log(fields: dict) -> dict:
    """With `--otlp`, the access log's fields also go to the collector, as the attributes of an
    OTLP log record (with the request's trace and span ids), beside the file log."""
    return {"name": "envoy.access_loggers.open_telemetry", "typed_config": {
        "@type": _TYPES["otel_log"],
        "common_config": {"log_name": LISTENER_NAME, "transport_api_version": "V3",
                          "grpc_service": {"envoy_grpc": {"cluster_name": OTLP_CLUSTER}}},
        "body": {"string_value": "%REQ(:METHOD)% %REQ(:AUTHORITY)%%REQ(:PATH)% %RESPONSE_CODE%"},
        "attributes": {"values": [{"key": key, "value": _any_value(value)} for key, value in fields.items()]}}}


def grpc_local_replies(checked: Checked) -> dict:
    """Envoy answers a gRPC call's refusal with the grpc-status of its HTTP status, and jwt_authn
    refuses a token for another audience with 403, which a gRPC client would read as 7
    PERMISSION_DENIED. Answered 401, it reads 16 UNAUTHENTICATED, as every other token failure
    does. Only for gRPC calls (the content-types Envoy converts): an HTTP client keeps its 403."""
    # A metadata filter matches when its key is missing, unless told otherwise.
    wrong_audience = [{"metadata_filter": {"match_if_key_not_found": False, "matcher": {
        "filter": JWT_FILTER, "path": [{"key": TOKEN_FAILURE_PREFIX + name}, {"key": "message"}],
        "value": {"string_match": {"exact": WRONG_AUDIENCE}}}}}
        for name, issuer in sorted(checked.issuers.items()) if issuer.audiences]
    token = wrong_audience[0] if len(wrong_audience) == 1 else {"or_filter": {"filters": wrong_audience}}
    refused = _refused("policyc.grpc_wrong_audience_status")
    return {"mappers": [{"filter": {"and_filter": {"filters": [_GRPC_CALL, refused, token]}}, "status_code": 401}]}


# A local reply's request is a gRPC call (the content-types Envoy converts).
_GRPC_CALL = {"header_filter": {"header": {"name": "content-type", "string_match": {
    "safe_regex": {"regex": r"application/grpc(\+.*)?"}}}}}


def _refused(runtime_key: str) -> dict:
    """A local reply answered 403 (`runtime_key` names the number, as Envoy requires)."""
    return {"status_code_filter": {"comparison": {"op": "EQ", "value": {"default_value": 403,
                                                                         "runtime_key": runtime_key}}}}


# Envoy answers the native filter's refusal of a gRPC call with grpc-status 0, OK: the module ABI's
# local reply passes that status, where RBAC, Lua and jwt_authn leave Envoy to derive 7
# PERMISSION_DENIED from the 403. This sets 7 on every 403 Envoy answers a gRPC call itself, which
# changes the native filter's and leaves the others' 7 as it was (a mapper earlier in the list
# answers a token refused for its audience); an upstream's answers never pass through it.
NATIVE_GRPC_REFUSAL = {
    "filter": {"and_filter": {"filters": [_GRPC_CALL, _refused("policyc.native_refusal_status")]}},
    "headers_to_add": [{"header": {"key": "grpc-status", "value": "7"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
}


def downstream_tls(checked: Checked) -> dict:
    """The listener's TLS: its own certificate, and with `trust` CAs a client certificate asked
    for but not required. A presented one must verify (chain and validity period) or the
    handshake fails; callers without one connect, and peer atoms are false for them."""
    tls = checked.listener_tls
    # HTTP/2 when the client offers it by ALPN, else HTTP/1.1.
    context = {"tls_certificates": [{"certificate_chain": {"inline_string": tls.chain},
                                     "private_key": {"inline_string": tls.key}}],
               "alpn_protocols": ["h2", "http/1.1"]}
    if checked.trusts:
        cas = "".join(ca.public_bytes(serialization.Encoding.PEM).decode()
                      for _, certificates in sorted(checked.trusts.items()) for ca in certificates)
        context["validation_context"] = {"trusted_ca": {"inline_string": cas}}
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": _TYPES["downstream_tls"], "common_tls_context": context, "require_client_certificate": False}}


def clusters(checked: Checked, options: Options) -> list[dict]:
    if options.upstream_override:
        result = [cluster(OVERRIDE_CLUSTER, options.upstream_override, protocol=options.upstream_override_protocol)]
    else:
        result = [cluster(options.cluster_of(s), s.upstream, protocol=s.upstream_protocol)
                  for _, s in sorted(checked.services.items())]
    if options.otlp is not None:
        result.append(cluster(OTLP_CLUSTER, options.otlp, protocol=n.UpstreamProtocol.HTTP2))
    for name, issuer in sorted(checked.issuers.items()):
        if name not in checked.keys:
            result.append(_jwks_cluster(issuer)[1])
    return result


def bootstrap(listener_config: dict | None, cluster_configs: list[dict], options: Options) -> dict:
    """The whole bootstrap; without a listener, for one that LDS provides."""
    listeners = [listener_config] if listener_config is not None else []
    return {
        "node": {"id": "policyc", "cluster": "policyc"},
        "admin": {"address": socket_address(options.admin)},
        "static_resources": {"listeners": listeners, "clusters": cluster_configs},
        # Globs become RE2 regexes; Envoy's default program-size cap (100) is too small for long ones.
        "layered_runtime": {"layers": [{"name": "policyc", "static_layer": {
            "re2.max_program_size.error_level": 100000, "re2.max_program_size.warn_level": 100000}}]},
    }


def discovery_response(kind: str, resources: list[dict], version: str) -> dict:
    """A file-based xDS resource set: what Envoy reads from lds.yaml, rds.yaml or cds.yaml."""
    return {"version_info": version, "resources": [{"@type": _TYPES[kind], **r} for r in resources]}


def dynamic_bootstrap(config_dir: str, options: Options) -> dict:
    """A bootstrap with no policy in it: clusters and the listener (whose routes come by RDS) are
    read from `config_dir` and reloaded when a deploy renames new files into it."""
    config = bootstrap(None, [], options)
    del config["static_resources"]
    config["dynamic_resources"] = {"cds_config": _watched(config_dir, "cluster"),
                                   "lds_config": _watched(config_dir, "listener")}
    return config


def service_filters(checked: Checked, service: n.Service, plan: Plan) -> ServiceFilters:
    """The filter configs enforcing `service` according to `plan` (already feasible)."""
    source = lua.service_script(checked, service, plan.deny == "lua", plan.allow == "lua") \
        if "lua" in (plan.deny, plan.allow) else None
    section = native.service_section(checked, service) if plan.deny == "native" else None
    builder = rbac.PrincipalBuilder(checked)  # each rule's principal built once per checked set
    deny, allow = _rbac_configs(builder, service, plan)
    shares = route_shares(checked, service) if "rbac" in (plan.deny, plan.allow) else {"/": service.rules}
    by_prefix = {route: _rbac_configs(builder, replace(service, rules=rules), plan) for route, rules in shares.items()}
    sans = section is not None and native.reads_sans(checked, service)
    return ServiceFilters(deny, source, allow, by_prefix, section, sans)


def _rbac_configs(builder: rbac.PrincipalBuilder, service: n.Service, plan: Plan) -> tuple[dict | None, dict | None]:
    """The RBAC deny and allow configs of the service's rules (all of them, or one route's share)."""
    deny = rbac.rules_config(builder, service, n.Effect.DENY)[0] if plan.deny == "rbac" else None
    allow = rbac.rules_config(builder, service, n.Effect.ALLOW)[0] if plan.allow == "rbac" else None
    if plan.deny == "native" and service.mode is n.Mode.ENFORCE:
        # The native filter answers its own refusals; this is for a chain without it. On a hot
        # reload the connections of the old listener take the new routes through the old chain,
        # where this lets nothing through that the native filter did not allow.
        allow = rbac.require_native_verdict(service)
    elif "lua" in (plan.deny, plan.allow) and service.mode is n.Mode.ENFORCE:
        allow = rbac.require_verdict(service, allow)
    return deny, allow
