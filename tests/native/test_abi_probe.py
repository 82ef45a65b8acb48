"""What Envoy 1.40's dynamic module ABI lets a native policy read, pinned by a real Envoy running
tests/native/probe.c (which answers with one `name=value` line per read, `name!` when the callback
returned false). native_runtime/README.md lists these facts; each is asserted here."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import time

import jwt
import pytest

from policyc.credentials.certs import issue, make_ca
from policyc.credentials.tokens import generate_key, mint, public_jwks
from policyc.proof.envoy_process import running_envoy
from policyc.semantics.headers import PAYLOAD_HEADER

from .conftest import JWT_FILTER, PROBE, REPO, bootstrap, build, dynamic_module_filter

pytestmark = pytest.mark.envoy

# jwt_authn's payload_in_metadata puts a token's claims so: one Struct under one key.
PAYLOAD = {"sub": "alice", "groups": ["admins", "ops"], "iat": 1700000000}
SET_METADATA = {
    "name": "envoy.filters.http.set_metadata",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.set_metadata.v3.Config",
        "metadata": [{"metadata_namespace": JWT_FILTER,
                      "value": {"jwt_payload": PAYLOAD, "flat": "text", "list": ["a", "b"]}}],
    },
}


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory):
    return build(tmp_path_factory.mktemp("probe"), PROBE, REPO / "tests/native/probe.c").parent


def parse(body: bytes) -> dict[str, str | None]:
    lines = body.decode().splitlines()
    return {line[:-1]: None for line in lines if line.endswith("!")} | dict(
        line.split("=", 1) for line in lines if not line.endswith("!"))


def probe_over_http(port: int) -> tuple[dict, int]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.putrequest("POST", "/a/b?q=1", skip_host=True)
    for name, value in [("host", "svc.example"), ("x-multi", "one"), ("x-multi", "two, three")]:
        connection.putheader(name, value)
    connection.endheaders()
    local_port = connection.sock.getsockname()[1]
    try:
        return parse(connection.getresponse().read()), local_port
    finally:
        connection.close()


def test_headers_address_and_metadata(probe_dir, search_path, tmp_path):
    search_path(probe_dir)
    config = bootstrap([SET_METADATA, dynamic_module_filter("", PROBE)], tmp_path / "access.log")
    with running_envoy(config, tmp_path) as envoy:
        seen, local_port = probe_over_http(envoy.listener_ports["main"])
    # Pseudo-headers by name; a header sent twice over HTTP/1.1 is two values, read by index.
    assert seen["header :path 0"] == "/a/b?q=1"
    assert seen["header :method 0"] == "POST"
    assert seen["header :authority 0"] == "svc.example"
    assert seen["header :scheme 0"] == "http"
    assert (seen["header x-multi count"], seen["header x-multi 0"], seen["header x-multi 1"]) == (
        "2", "one", "two, three")
    assert "header absent count" in seen  # the callback says false for a header not sent
    assert seen["header absent count"] is None
    assert (seen["request.path"], seen["request.method"], seen["request.host"]) == ("/a/b?q=1", "POST", "svc.example")
    # The peer: the direct remote address, and source.address, each as one "ip:port" string.
    assert seen["direct remote address"] == seen["source.address"] == f"127.0.0.1:{local_port}"
    # Another filter's metadata: keys directly under the namespace only. A Struct such as
    # jwt_payload is not a string, has no path syntax into it, and is not a list.
    assert seen["metadata keys"] == "3"
    assert seen["metadata string flat"] == "text"
    assert seen["metadata string jwt_payload"] is None
    assert seen["metadata string jwt_payload.sub"] is None
    assert seen["metadata list jwt_payload size"] is None
    assert (seen["metadata list list size"], seen["metadata list list 0"], seen["metadata list list 1"]) == (
        "2", "a", "b")
    # No TLS: no mTLS attribute value, no peer certificate.
    assert seen["peer uri"] is None and seen["peer subject"] is None


def tls_socket(ca, server) -> dict:
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": True,
        "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"inline_string": server.cert_pem},
                                  "private_key": {"inline_string": server.key_pem}}],
            "validation_context": {"trusted_ca": {"inline_string": ca.cert_pem}}}}}


def probe_over_tls(port: int, client, tmp_path) -> dict:
    (tmp_path / "client.pem").write_text(client.cert_pem)
    (tmp_path / "client.key").write_text(client.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.load_cert_chain(tmp_path / "client.pem", tmp_path / "client.key")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw) as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n\r\n")
        response = b""
        while chunk := tls.recv(65536):
            response += chunk
    return parse(response.split(b"\r\n\r\n", 1)[1])


def test_the_client_certificate_shows_its_first_san_of_each_kind_only(probe_dir, search_path, tmp_path):
    search_path(probe_dir)
    ca = make_ca("probe CA")
    server = issue(ca, "localhost", dns=["localhost"], server=True)
    client = issue(ca, "client", uris=["spiffe://example.org/first", "spiffe://example.org/second"],
                   dns=["one.example", "two.example"], organization="probe")
    config = bootstrap([dynamic_module_filter("", PROBE)], tmp_path / "access.log",
                       transport_socket=tls_socket(ca, server))
    with running_envoy(config, tmp_path) as envoy:
        seen = probe_over_tls(envoy.listener_ports["main"], client, tmp_path)
    assert seen["connection.mtls"] == "true"
    assert seen["peer uri"] == "spiffe://example.org/first"
    assert seen["peer dns"] == "one.example"
    assert seen["peer subject"] == "CN=client,O=probe"


PEER_FILTER = {"name": "peer_sans", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.network.dynamic_modules.v3.DynamicModuleNetworkFilter",
    "dynamic_module_config": {"name": PROBE}, "filter_name": "peer_sans"}}


def with_peer_filter(config: dict) -> dict:
    """`config` with the module's network filter before the HTTP connection manager."""
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            chain["filters"].insert(0, PEER_FILTER)
    return config


def probe_twice_over_tls(port: int, client, tmp_path) -> list[dict]:
    """Two requests on one TLS connection (HTTP/1.1 keep-alive)."""
    (tmp_path / "client.pem").write_text(client.cert_pem)
    (tmp_path / "client.key").write_text(client.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.load_cert_chain(tmp_path / "client.pem", tmp_path / "client.key")
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        seen = []
        for _ in range(2):
            connection.request("GET", "/", headers={"host": "svc"})
            seen.append(parse(connection.getresponse().read()))
        return seen
    finally:
        connection.close()


def sans_record(hex_text: str) -> tuple[list[str], list[str]]:
    """The URI and DNS SANs of a record (native_runtime/peer_sans.h), which must be exactly one."""
    data, at, lists = bytes.fromhex(hex_text), 0, []
    for _ in range(2):
        count, at = int.from_bytes(data[at:at + 4], "big"), at + 4
        sans = []
        for _ in range(count):
            length = int.from_bytes(data[at:at + 4], "big")
            sans.append(data[at + 4:at + 4 + length].decode())
            at += 4 + length
        lists.append(sans)
    assert at == len(data)
    return lists[0], lists[1]


def test_a_network_filter_hands_every_san_to_the_http_filter(probe_dir, search_path, tmp_path):
    """What the native filter's peer.uri and peer.dns rest on (native_runtime/README.md, *Client
    certificates*): the module's network filter reads every SAN, in the certificate's order, and
    the record it stores in the connection's filter state is read by each HTTP stream of that
    connection; without the network filter there is none."""
    search_path(probe_dir)
    ca = make_ca("probe CA")
    server = issue(ca, "localhost", dns=["localhost"], server=True)
    uris = ["spiffe://example.org/first", "spiffe://example.org/second", "urn:third"]
    dns = ["one.example", "two.example"]
    client = issue(ca, "client", uris=uris, dns=dns)
    seen = {}
    for name, chain in [("with", with_peer_filter), ("without", lambda config: config)]:
        config = chain(bootstrap([dynamic_module_filter("", PROBE)], tmp_path / f"{name}.log",
                                 transport_socket=tls_socket(ca, server)))
        with running_envoy(config, tmp_path) as envoy:
            seen[name] = probe_twice_over_tls(envoy.listener_ports["main"], client, tmp_path)
    assert [sans_record(each["peer sans record"]) for each in seen["with"]] == [(uris, dns)] * 2
    assert [each["peer sans record"] for each in seen["without"]] == [None, None]
    assert seen["without"][0]["peer uri"] == uris[0]  # the attribute: the first one only


def test_without_tls_the_record_holds_no_san(probe_dir, search_path, tmp_path):
    search_path(probe_dir)
    config = with_peer_filter(bootstrap([dynamic_module_filter("", PROBE)], tmp_path / "access.log"))
    with running_envoy(config, tmp_path) as envoy:
        seen, _ = probe_over_http(envoy.listener_ports["main"])
    assert sans_record(seen["peer sans record"]) == ([], [])


def jwt_authn(keys: dict) -> dict:
    """jwt_authn as policyc emits it for the native filter: a provider per issuer, each forwarding
    the verified payload in PAYLOAD_HEADER; a token may be missing, or on /dry also fail."""
    providers = {name: {"issuer": f"https://{name}.test", "forward": True, "payload_in_metadata": "jwt_payload",
                        "forward_payload_header": PAYLOAD_HEADER, "require_expiration": True,
                        "from_headers": [{"name": "Authorization", "value_prefix": "Bearer "}],
                        "local_jwks": {"inline_string": json.dumps(public_jwks(key))}}
                 for name, key in keys.items()}
    names = [{"provider_name": name} for name in providers]
    return {"name": JWT_FILTER, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": providers,
        "requirement_map": {"enforce": {"requires_any": {"requirements": [*names, {"allow_missing": {}}]}},
                            "dry": {"requires_any": {"requirements": [*names, {"allow_missing_or_failed": {}}]}}},
        "rules": [{"match": {"prefix": "/dry"}, "requirement_name": "dry"},
                  {"match": {"prefix": "/"}, "requirement_name": "enforce"}]}}


def signed(header: dict, payload_segment: str, key: dict) -> str:
    """A token whose payload segment is exactly `payload_segment`, signed as it stands."""
    head = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    signature = jwt.PyJWS().get_algorithm_by_name("ES256").sign(
        f"{head}.{payload_segment}".encode(), jwt.PyJWK(key, algorithm="ES256").key)
    return f"{head}.{payload_segment}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def test_jwt_authn_forwards_only_the_payload_it_verified(probe_dir, search_path, tmp_path):
    """What the native filter's claims rest on (native_runtime/README.md, *Token claims*): the
    payload header holds the verified token's payload segment as the token carries it, and a
    client's own copy is removed whether a token is missing, verified or failed."""
    search_path(probe_dir)
    keys = {"a": generate_key(kid="a"), "b": generate_key(kid="b")}
    claims = {"iss": "https://a.test", "sub": "alice", "exp": int(time.time()) + 600}
    segment = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode()  # padded
    spaced = segment[:5] + " \t" + segment[5:]
    tokens = {"a": signed({"alg": "ES256", "kid": "a"}, segment, keys["a"]),
              "spaced": signed({"alg": "ES256", "kid": "a"}, spaced, keys["a"]),
              "b": mint({**claims, "iss": "https://b.test"}, keys["b"]),
              "forged": mint(claims, keys["b"])}  # a's issuer, b's key: fails
    requests = {"none": ("/", None), "a": ("/", "a"), "spaced": ("/", "spaced"), "b": ("/", "b"),
                "failed, dry": ("/dry", "forged"), "none, dry": ("/dry", None)}
    config = bootstrap([jwt_authn(keys), dynamic_module_filter("", PROBE)], tmp_path / "access.log")
    seen = {}
    with running_envoy(config, tmp_path) as envoy:
        for name, (path, token) in requests.items():
            connection = http.client.HTTPConnection("127.0.0.1", envoy.listener_ports["main"], timeout=10)
            headers = {PAYLOAD_HEADER: "client's own"}
            if token:
                headers["authorization"] = f"Bearer {tokens[token]}"
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            assert response.status == 200, name
            seen[name] = parse(response.read())
            connection.close()
    counts = {name: values[f"header {PAYLOAD_HEADER} count"] for name, values in seen.items()}
    forwarded = {name: [seen[name][f"header {PAYLOAD_HEADER} {i}"] for i in range(int(count))] if count else None
                 for name, count in counts.items()}
    assert forwarded == {"none": None, "a": [segment], "spaced": [spaced], "b": [tokens["b"].split(".")[1]],
                         "failed, dry": None, "none, dry": None}
