"""The Lua runtime (lua_runtime/*.lua) module by module, under LuaJIT through lupa, against the
reference interpreter's own functions; then the fail-closed wrapper (decide.run) with errors
injected wherever a script can meet one. The first tests pin the stand-in itself to what Envoy
was seen to do (envoy-lab.md §1), since every other test trusts it."""

from __future__ import annotations

import ipaddress
import shutil
import socket
from pathlib import Path

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from policyc import nodes as n
from policyc.backends.lua import _glob, _networks, lua_string, runtime_source, service_script
from policyc.pipeline import load_and_check
from policyc.semantics.compare import compare_string
from policyc.semantics.glob import glob_matches
from policyc.semantics.net import address_in
from policyc.semantics.tokens import claim_value
from tests.lua.stand_in import (
    FAULT_POINTS,
    JWT_NAMESPACE,
    PAYLOAD_KEY,
    Request,
    ScriptState,
    envoy_request,
    from_lua,
    new_runtime,
    peer_address,
    run_script,
    to_lua,
)
from tests.unit.test_glob_net_hosts import MATCHES, NOT_MATCHES

KEYS = Path(__file__).resolve().parents[1] / "cases" / "keys"


class Runtime:
    """The runtime modules loaded into one LuaJIT state, with helpers to call them from Python."""

    def __init__(self):
        self.lua = new_runtime()
        modules = self.lua.execute(
            (runtime_source() + "return {glob = glob, net = net, request = request, claims = claims, "
                                "decide = decide}").encode())
        self.glob, self.net, self.request, self.claims, self.decide = (
            modules[k] for k in (b"glob", b"net", b"request", b"claims", b"decide"))
        # Evaluates a constant as the compiler writes it (it may name glob.ANY).
        self._constant = self.lua.execute(b"""
            local glob = ...
            return function(text)
              local f = assert(loadstring("return " .. text))
              setfenv(f, { glob = glob })
              return f()
            end""", self.glob)

    def constant(self, text: str):
        return self._constant(text.encode())

    def value(self, python_value):
        return to_lua(self.lua, python_value)

    def query(self, claims) -> object:
        """A request table `q` as request.new makes it, holding only a token payload."""
        q = self.lua.table()
        q[b"payload"] = None if claims is None else self.value(claims)
        return q


@pytest.fixture(scope="module")
def rt() -> Runtime:
    return Runtime()


# ---------------------------------------------------------------- the stand-in behaves as Envoy did

DUMP = r"""
function envoy_on_request(handle)
  local h = handle:headers()
  local seen = {}
  local function note(k, v) seen[#seen + 1] = k .. "=" .. tostring(v) end
  note("get", h:get("X-Multi"))
  note("n", h:getNumValues("x-multi"))
  for i = 0, 3 do note("at" .. i, h:getAtIndex("X-MULTI", i)) end
  note("absent", h:get("absent"))
  note("nabsent", h:getNumValues("absent"))
  note("path", h:get(":path"))
  local md = handle:streamInfo():dynamicMetadata():get("envoy.filters.http.jwt_authn")
  local p = md.jwt_payload
  note("g1", p.groups[1]); note("g0", p.groups[0]); note("#g", #p.groups)
  note("nothing", p.nothing); note("big", p.big); note("n42", p.n); note("flag", p.flag)
  note("deep", p.obj.deep.x[2]); note("#deep", #p.obj.deep.x)
  note("hole1", p.holes[1]); note("hole2", p.holes[2])
  note("empty", type(p.empty_list) .. type(p.empty_object))
  p.groups[1] = "changed"  -- a fresh table on every get: this changes nothing in Envoy
  note("again", handle:streamInfo():dynamicMetadata():get("envoy.filters.http.jwt_authn").jwt_payload.groups[1])
  note("none", handle:streamInfo():dynamicMetadata():get("nobody"))
  note("peer", handle:streamInfo():downstreamDirectRemoteAddress())
  handle:logInfo(table.concat(seen, " "))
end
"""


def test_stand_in_headers_metadata_and_peer_are_envoys():
    claims = {"groups": ["a", "b"], "nothing": None, "big": 9007199254740993, "n": 42, "flag": True,
              "obj": {"k": "v", "deep": {"x": [1, "two", False]}}, "holes": [None, "x"], "empty_list": [],
              "empty_object": {}}
    request = envoy_request("GET", "/dump?q=1&r=2", [("x-multi", "one"), ("X-Multi", "two"), ("x-multi", "three,3b")],
                            source="::ffff:10.0.0.1", claims=claims)
    outcome = run_script(DUMP, request)
    assert outcome.error is None and outcome.status is None
    assert outcome.logs == [("info", " ".join([
        "get=one,two,three,3b", "n=3", "at0=one", "at1=two", "at2=three,3b", "at3=nil", "absent=nil", "nabsent=0",
        "path=/dump?q=1&r=2", "g1=a", "g0=nil", "#g=2", "nothing=nil", "big=9.007199254741e+15", "n42=42",
        "flag=true", "deep=two", "#deep=3", "hole1=nil", "hole2=x", "empty=tabletable", "again=a", "none=nil",
        "peer=10.0.0.1:40000"]))]


def test_stand_in_without_a_token_has_no_jwt_metadata():
    script = 'function envoy_on_request(h) h:logInfo(tostring(h:streamInfo():dynamicMetadata():get(' \
             '"envoy.filters.http.jwt_authn"))) end'
    assert run_script(script, envoy_request("GET", "/")).logs == [("info", "nil")]


def test_stand_in_respond_ends_the_request_even_inside_pcall():
    script = r"""
    function envoy_on_request(h)
      h:streamInfo():dynamicMetadata():set("lab", "before", "yes")
      local ok = pcall(function()
        h:respond({[":status"] = "403", ["content-type"] = "text/plain"}, "denied\n")
        h:logErr("after respond, inside pcall")
      end)
      h:logErr("after pcall")
      error("after respond")
    end"""
    outcome = run_script(script, envoy_request("GET", "/"))
    assert (outcome.status, outcome.response.body, outcome.response.headers["content-type"]) == (403, "denied\n",
                                                                                              "text/plain")
    assert outcome.logs == [] and outcome.error is None
    assert outcome.metadata == {"lab": {"before": "yes"}}


@pytest.mark.parametrize("headers", ['{["x-foo"] = "bar"}', '{[":status"] = "99"}', '{[":status"] = "600"}'])
def test_stand_in_respond_without_a_good_status_is_a_script_error_and_fails_open(headers):
    outcome = run_script(f'function envoy_on_request(h) h:respond({headers}, "x") end', envoy_request("GET", "/"))
    assert outcome.status is None and ":status must be between 200-599" in outcome.error


def test_stand_in_uncaught_error_lets_the_request_through():
    script = 'function envoy_on_request(h) h:streamInfo():dynamicMetadata():set("lab", "d", "deny") error("boom") end'
    outcome = run_script(script, envoy_request("GET", "/"))
    assert outcome.status is None and "boom" in outcome.error and outcome.metadata == {"lab": {"d": "deny"}}


@pytest.mark.parametrize("misuse", ['h.headers()', 'h:headers().get(":path")', 'h.x = 1', 'h:nothing()',
                                    'for k in pairs(h) do error("iterable: " .. k) end error("done")'])
def test_stand_in_objects_are_as_strict_as_userdata(misuse):
    outcome = run_script(f"function envoy_on_request(h) {misuse} end", envoy_request("GET", "/"))
    assert outcome.error is not None and "iterable" not in outcome.error


def test_stand_in_fingerprint_sees_state_a_request_leaves_behind():
    # What the corpus differential relies on to prove the emitted scripts keep no state.
    leaky = ScriptState("local seen = {} function envoy_on_request(h) seen[#seen + 1] = h:headers():get(':path') end")
    clean = ScriptState("local K = {1} function envoy_on_request(h) local q = {K[1]} q[2] = 2 end")
    before = (leaky.fingerprint(), clean.fingerprint())
    for state in (leaky, clean):
        state.run(envoy_request("GET", "/a"))
    assert leaky.fingerprint() != before[0] and clean.fingerprint() == before[1]


def test_stand_in_state_keeps_globals_between_requests():
    state = ScriptState("count = 0 function envoy_on_request(h) count = count + 1 h:logInfo(tostring(count)) end")
    logs = [state.run(envoy_request("GET", "/")).logs for _ in range(3)]
    assert logs == [[("info", "1")], [("info", "2")], [("info", "3")]]
    assert state.added_globals() == {"count", "envoy_on_request"}


@pytest.mark.parametrize(("ip", "text"), [
    ("10.1.2.3", "10.1.2.3:40000"), ("::1", "[::1]:40000"), ("2001:db8:0:0:1:0:0:1", "[2001:db8::1:0:0:1]:40000"),
    ("::ffff:10.0.0.1", "10.0.0.1:40000"), ("::10.0.0.1", "[::10.0.0.1]:40000"), ("fe80::", "[fe80::]:40000"),
])
def test_peer_address_is_inet_ntop_text(ip, text):
    assert peer_address(ip) == text


# ---------------------------------------------------------------- glob

def lua_glob(rt: Runtime, pattern: str, path: str) -> bool:
    return rt.glob.match(rt.constant(_glob(pattern)), rt.glob.split(path.encode()))


@pytest.mark.parametrize(("pattern", "paths", "expected"),
                         [(p, paths, True) for p, paths in MATCHES] + [(p, paths, False) for p, paths in NOT_MATCHES])
def test_glob_examples(rt, pattern, paths, expected):
    assert [p for p in paths if lua_glob(rt, pattern, p) != expected] == []


_segments = st.one_of(st.sampled_from(["", "a", "b", ".", "*", "**", "***", "a*", "*a", "a*b", "*.*", "*a*", "**"]),
                      st.text(alphabet="ab.*", max_size=4))
_globs = st.lists(_segments, max_size=5).map(lambda s: "/" + "/".join(s))
_paths = st.one_of(st.lists(st.text(alphabet="ab.", max_size=3), max_size=6).map(lambda s: "/" + "/".join(s)),
                   st.text(alphabet="ab./*", max_size=10))


@given(pattern=_globs, path=_paths)
@example(pattern="/a/**/b/**", path="/a/b/x/b")
@example(pattern="/*a*a*b", path="/aaab")
@example(pattern="/**/", path="/")
def test_glob_matches_like_the_interpreter(rt, pattern, path):
    assert lua_glob(rt, pattern, path) == glob_matches(pattern, path)


@given(path=st.text(alphabet="ab/", max_size=12))
def test_glob_split_is_python_split(rt, path):
    assert from_lua(rt.glob.split(path.encode())) == path.split("/")


def test_glob_is_linear_on_pathological_patterns(rt):
    # Exponential backtracking would not come back from these; no timing is asserted.
    within_segment = "/" + "*a" * 40 + "*b"
    assert lua_glob(rt, within_segment, "/" + "a" * 20_000) is False
    no_suffix = "/" + "*a" * 40 + "*b*"
    assert lua_glob(rt, no_suffix, "/" + "a" * 20_000) is False
    assert lua_glob(rt, no_suffix, "/" + "a" * 20_000 + "b") is True
    across_segments = "/**/a" * 40 + "/b"
    assert lua_glob(rt, across_segments, "/a" * 5_000) is False
    assert lua_glob(rt, across_segments, "/a" * 5_000 + "/b") is True


# ---------------------------------------------------------------- net

def lua_peer(rt: Runtime, address: str):
    return from_lua(rt.net.peer_bytes(address.encode()))


@pytest.mark.parametrize(("address", "expected"), [
    ("10.1.2.3:5678", "10.1.2.3"), ("0.0.0.0:1", "0.0.0.0"), ("255.255.255.255:65535", "255.255.255.255"),
    ("10.1.2.3", "10.1.2.3"),
    ("[::1]:80", "::1"), ("[::]:80", "::"), ("[1::]:80", "1::"), ("[2001:db8::1]:443", "2001:db8::1"),
    ("[2001:0db8:0000:0000:0000:0000:0000:0001]:1", "2001:db8::1"), ("[FD00:20::A]:1", "fd00:20::a"),
    ("[1:2:3:4:5:6:7:8]:1", "1:2:3:4:5:6:7:8"), ("[1::8]:1", "1::8"), ("[1:2:3:4:5:6::8]:1", "1:2:3:4:5:6:0:8"),
    ("[::1.2.3.4]:1", "::102:304"),  # IPv4-compatible: stays IPv6
    ("[64:ff9b::192.0.2.33]:1", "64:ff9b::c000:221"), ("[1:2:3:4:5:6:1.2.3.4]:1", "1:2:3:4:5:6:102:304"),
    ("[::ffff:10.0.0.1]:1", "10.0.0.1"), ("[::ffff:a00:1]:1", "10.0.0.1"),  # IPv4-mapped: compared as IPv4
    ("[0:0:0:0:0:ffff:192.168.1.7]:1", "192.168.1.7"),
])
def test_peer_bytes(rt, address, expected):
    assert lua_peer(rt, address) == list(ipaddress.ip_address(expected).packed)


@pytest.mark.parametrize("address", [
    "256.1.1.1:80", "1.2.3:80", "1.2.3.4.5:80", "a.b.c.d:80", "", "/tmp/envoy.sock", "envoy_internal", "[::1]",
    "[1:2:3:4:5:6:7:8:9]:1", "[1::2::3]:1", "[12345::]:1", "[::g]:1", "[1:2:3:4:5:6:7::8]:1", "[:1:2:3:4:5:6:7]:1",
    "[1.2.3.4]:1", "[::1.2.3]:1", "[::1.2.3.256]:1", "[1:2:3:4:5:6:7:1.2.3.4]:1", "[1::2:]:1", "[:::]:1",
    "[::a1.2.3.4]:1", "[1:::1.2.3.4]:1", "[::ffff:1.2.3.4:5]:1", "[1.2.3.4::]:1",
])
def test_peer_bytes_refuses_what_is_not_an_address(rt, address):
    assert lua_peer(rt, address) is None


def _expected_peer(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[int]:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return list(address.packed)


def _dotted(address: ipaddress.IPv6Address) -> str:
    """The address with its last 32 bits as a dotted quad, its longest run of zero groups as "::"."""
    groups = [f"{int(g, 16):x}" for g in address.exploded.split(":")[:6]]
    tail = str(ipaddress.IPv4Address(address.packed[12:]))
    runs = [(i, j) for i in range(6) for j in range(i + 1, 7) if all(g == "0" for g in groups[i:j])]
    if not runs:
        return ":".join(groups) + ":" + tail
    i, j = max(runs, key=lambda run: run[1] - run[0])
    return ":".join(groups[:i]) + "::" + ":".join(groups[j:]) + (":" if j < 6 else "") + tail


def _texts(address: ipaddress.IPv6Address) -> list[str]:
    """Ways to write one IPv6 address: inet_ntop's, Python's, exploded, upper case, dotted tails."""
    groups = address.exploded.split(":")
    return [socket.inet_ntop(socket.AF_INET6, address.packed), address.compressed, address.exploded,
            address.compressed.upper(), ":".join(groups[:6]) + ":" + str(ipaddress.IPv4Address(address.packed[12:])),
            _dotted(address)]


_ipv6 = st.one_of(
    st.ip_addresses(v=6),
    st.ip_addresses(v=4).map(lambda a: ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + a.packed)),  # mapped
    st.ip_addresses(v=4).map(lambda a: ipaddress.IPv6Address(b"\0" * 12 + a.packed)),  # compatible
    st.lists(st.sampled_from([0, 0, 0, 1, 0xFFFF]), min_size=8, max_size=8).map(
        lambda g: ipaddress.IPv6Address(b"".join(x.to_bytes(2, "big") for x in g))),  # runs of zeros
)


@given(address=_ipv6, port=st.integers(0, 65535))
def test_peer_bytes_reads_every_way_of_writing_an_ipv6_address(rt, address, port):
    for text in _texts(address):
        assert lua_peer(rt, f"[{text}]:{port}") == _expected_peer(address), text


@given(address=st.ip_addresses(v=4), port=st.integers(0, 65535))
def test_peer_bytes_reads_ipv4(rt, address, port):
    assert lua_peer(rt, f"{address}:{port}") == list(address.packed)


def _leading_zero_octet(text: str) -> bool:
    dotted = text.rsplit(":", 1)[-1]
    return any(len(part) > 1 and part.startswith("0") for part in dotted.split("."))


@given(text=st.text(alphabet="0123456789abcdefABCDEF:.", max_size=45))
@example(text="::a1.2.3.4")
@example(text="1:::1.2.3.4")
@example(text="::ffff:1.2.3.4")
def test_peer_bytes_never_misreads_ipv6_text(rt, text):
    # Octets with leading zeros are left out: Python refuses them, the runtime reads them as
    # decimal, and inet_ntop never writes them.
    assume(not _leading_zero_octet(text))
    try:
        expected = _expected_peer(ipaddress.IPv6Address(text))
    except ValueError:
        expected = None
    assert lua_peer(rt, f"[{text}]:80") == expected


@given(text=st.text(alphabet="0123456789.", max_size=16))
def test_peer_bytes_never_misreads_ipv4_text(rt, text):
    assume(not _leading_zero_octet(text))
    try:
        expected = list(ipaddress.IPv4Address(text).packed)
    except ValueError:
        expected = None
    assert lua_peer(rt, f"{text}:80") == expected


@st.composite
def _network_and_peer(draw):
    version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    network = ipaddress.ip_network((draw(st.ip_addresses(v=version)), draw(st.integers(0, bits))), strict=False)
    base = int(network.network_address)
    near = [base ^ (1 << draw(st.integers(0, bits - 1))), base, int(network.broadcast_address)]
    peer = draw(st.one_of(st.sampled_from(near).map(lambda v: ipaddress.ip_address(v) if version == 4
                                                    else ipaddress.IPv6Address(v)),
                          st.ip_addresses()))
    return network, peer


@given(pair=_network_and_peer())
def test_net_contains_like_ipaddress(rt, pair):
    network, peer = pair
    networks = rt.constant(_networks([str(network)]))
    inside = peer.version == network.version and peer in network
    assert rt.net.contains(networks[1], rt.value(list(peer.packed))) is inside
    assert rt.net.any_contains(networks, rt.value(list(peer.packed))) is inside


_CIDRS = ["10.0.0.0/8", "10.1.2.3/32", "0.0.0.0/0", "::/0", "::1/128", "fd00:20::/32", "2001:db8::7/128",
          "192.168.1.0/25", "fe80::/10"]


@given(cidrs=st.lists(st.sampled_from(_CIDRS), min_size=1, max_size=3),
       peer=st.one_of(st.ip_addresses(), st.sampled_from(["10.1.2.3", "::ffff:10.1.2.3", "::1", "fd00:20::5",
                                                         "fe80::1", "192.168.1.127", "192.168.1.128"])))
def test_source_in_like_the_interpreter(rt, cidrs, peer):
    bytes_ = rt.net.peer_bytes(peer_address(str(peer)).encode())
    assert rt.net.any_contains(rt.constant(_networks(cidrs)), bytes_) is address_in(str(peer), cidrs)


def test_any_contains_without_a_peer_is_false(rt):
    assert rt.net.any_contains(rt.constant(_networks(["0.0.0.0/0", "::/0"])), None) is False


# ---------------------------------------------------------------- claims

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2) | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.sampled_from(["", "a", "ab", "b", "1", "true", "é"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["a", "b", "1", "c"]), inner,
                                                                max_size=3),
    max_leaves=10,
)
_claim_paths = st.lists(st.sampled_from(["c", "a", "1", "b"]), min_size=1, max_size=3).map(tuple)
_wanted = st.sampled_from(["", "a", "ab", "b", "1", "true", "é"])


def lua_claim(rt: Runtime, payload, path):
    return rt.claims.value(rt.query(payload), rt.value(list(path)))


@given(payload=st.dictionaries(st.sampled_from(["c", "a", "1"]), _json, max_size=3), path=_claim_paths,
       op=st.sampled_from([n.Op.EQ, n.Op.IN, n.Op.PREFIX, n.Op.SUFFIX, n.Op.CONTAINS]),
       wanted=st.lists(_wanted, min_size=1, max_size=3).map(tuple))
@example(payload={"c": [None, "a"]}, path=("c",), op=n.Op.CONTAINS, wanted=("a",))
@example(payload={"c": {"1": "a"}}, path=("c",), op=n.Op.CONTAINS, wanted=("a",))
@example(payload={"c": [1, True]}, path=("c",), op=n.Op.CONTAINS, wanted=("1",))
@example(payload={"c": ["a", None, None, "b"]}, path=("c",), op=n.Op.CONTAINS, wanted=("b",))
def test_claim_comparisons_like_the_interpreter(rt, payload, path, op, wanted):
    value = lua_claim(rt, payload, path)
    if op is not n.Op.IN:
        wanted = wanted[:1]
    got = {
        n.Op.EQ: lambda: rt.claims.in_set(value, rt.value(set(wanted))),
        n.Op.IN: lambda: rt.claims.in_set(value, rt.value(set(wanted))),
        n.Op.PREFIX: lambda: rt.claims.has_prefix(value, wanted[0].encode()),
        n.Op.SUFFIX: lambda: rt.claims.has_suffix(value, wanted[0].encode()),
        n.Op.CONTAINS: lambda: rt.claims.contains(value, wanted[0].encode()),
    }[op]()
    assert got is compare_string(op, claim_value(payload, path), wanted)


@given(payload=st.dictionaries(st.sampled_from(["c", "a"]), _json, max_size=2), path=_claim_paths,
       value=st.booleans())
@example(payload={"c": 1}, path=("c",), value=True)
@example(payload={"c": 0}, path=("c",), value=False)
@example(payload={"c": None}, path=("c",), value=False)
@example(payload={"c": "true"}, path=("c",), value=True)
def test_claim_is_bool_like_the_interpreter(rt, payload, path, value):
    # The compiled form: (claims.value(q, K[i]) == true|false)
    compare = rt.lua.eval(b"function(a, b) return a == b end")
    assert compare(lua_claim(rt, payload, path), value) is (claim_value(payload, path) is value)


def test_claim_value_without_a_token_is_nil(rt):
    assert rt.claims.value(rt.query(None), rt.value(["sub"])) is None


@pytest.mark.parametrize(("value", "wanted", "expected"), [
    (["a", "b"], "b", True), ([None, "b"], "b", True), ([None, None, "b"], "b", True), (["a", None], "b", False),
    ({"x": "b"}, "b", False), ({"1": "b"}, "b", False), ([1, 2], "1", False), ([True], "true", False),
    ("b", "b", True), ("bb", "b", False), (1, "1", False), (True, "true", False), ([], "b", False),
    ({}, "b", False), ([["b"]], "b", False), ([{"b": "b"}], "b", False), (None, "b", False),
])
def test_claims_contains(rt, value, wanted, expected):
    payload = {"c": value}
    assert rt.claims.contains(lua_claim(rt, payload, ("c",)), wanted.encode()) is expected
    assert compare_string(n.Op.CONTAINS, claim_value(payload, ("c",)), (wanted,)) is expected


@pytest.mark.parametrize(("value", "expected"), [
    ("x", True), ("y", False), (1, False), (True, False), (None, False), (["x"], False), ({"x": "x"}, False),
])
def test_claims_string_tests_need_a_string(rt, value, expected):
    claim = lua_claim(rt, {"c": value}, ("c",))
    assert rt.claims.in_set(claim, rt.value({"x"})) is expected
    assert rt.claims.has_prefix(claim, b"x") is expected
    assert rt.claims.has_suffix(claim, b"x") is expected
    assert rt.claims.equals_claim(b"x", claim) is expected


@pytest.mark.parametrize(("claims", "expected"), [
    ({"iss": "https://cat", "sub": "user:default/alice"}, True),
    ({"iss": "https://cat", "sub": "user:default/zed", "ent": ["group:default/sre"]}, True),
    ({"iss": "https://cat", "sub": "user:default/zed", "ent": [None, "group:default/sre"]}, True),
    ({"iss": "https://cat", "sub": "user:default/zed", "ent": "group:default/sre"}, True),
    ({"iss": "https://cat", "sub": "user:default/zed", "ent": {"g": "group:default/sre"}}, False),
    ({"iss": "https://cat", "sub": "user:default/zed", "ent": [["group:default/sre"]]}, False),
    ({"iss": "https://other", "sub": "user:default/alice"}, False),
    ({"sub": "user:default/alice"}, False),
    (None, False),
])
def test_claims_member(rt, claims, expected):
    membership = rt.constant('{issuers = {["https://cat"] = true}, subjects = {["user:default/alice"] = true}, '
                             'entities = {["group:default/sre"] = true}}')
    assert rt.claims.member(rt.query(claims), membership) is expected


# ---------------------------------------------------------------- request

REQUEST_PROBE = runtime_source() + r"""
function envoy_on_request(handle)
  local q = request.new(handle, "jwt_payload")
  local values = {}
  request.any_header_value(q, "x-h", function(v) values[#values + 1] = v return false end)
  handle:logInfo(q.method .. " " .. q.path .. " payload=" .. type(q.payload) .. " values=" .. table.concat(values, "|")
                 .. " segments=" .. table.concat(request.segments(q, glob), "|"))
  local first = request.segments(q, glob)
  handle:logInfo(tostring(first == request.segments(q, glob)))
end
"""


@pytest.mark.parametrize(("path", "seen"), [("/a/b?x=1?y", "/a/b"), ("/a/b?", "/a/b"), ("/?", "/"), ("/a/", "/a/")])
def test_request_path_drops_the_query(path, seen):
    outcome = run_script(REQUEST_PROBE, envoy_request("GET", path))
    assert outcome.error is None
    assert outcome.logs[0][1].startswith(f"GET {seen} ")
    assert outcome.logs[0][1].endswith(" segments=" + "|".join(seen.split("/")))
    assert outcome.logs[1] == ("info", "true")  # the segments are split once per request


def test_request_tests_each_header_value_on_its_own():
    request = envoy_request("GET", "/", [("X-H", "a,b"), ("x-h", ""), ("x-h", "c")])
    assert "values=a,b||c " in run_script(REQUEST_PROBE, request).logs[0][1]


@pytest.mark.parametrize(("metadata", "payload"), [
    ({}, "nil"),
    ({JWT_NAMESPACE: {"jwt_failure": {"code": 401, "message": "Jwt is expired"}}}, "nil"),  # dry-run failure
    ({JWT_NAMESPACE: {PAYLOAD_KEY: {"sub": "a"}, "jwt_failure": {"code": 401}}}, "table"),
    ({JWT_NAMESPACE: {PAYLOAD_KEY: {}}}, "table"),
    ({"other": {PAYLOAD_KEY: {"sub": "a"}}}, "nil"),
])
def test_request_payload(metadata, payload):
    outcome = run_script(REQUEST_PROBE, envoy_request("GET", "/", metadata=metadata))
    assert f" payload={payload} " in outcome.logs[0][1]


@pytest.mark.parametrize("request_", [
    envoy_request("GET", "/", metadata={JWT_NAMESPACE: {PAYLOAD_KEY: "not an object"}}),
    envoy_request("GET", "/", metadata={JWT_NAMESPACE: {PAYLOAD_KEY: 7}}),
    Request(((":method", "GET"),)),
    Request(((":path", "/"),)),
])
def test_request_refuses_what_it_cannot_read(request_):
    assert run_script(REQUEST_PROBE, request_).error is not None  # decide.run turns this into a 403


# ---------------------------------------------------------------- decide: the decision and failing closed

def policy_script(deny: str = "", allow: str = "", *, dry_run: bool = False, decides_allow: bool = True) -> str:
    """The runtime with a hand-written POLICY (rule tests are Lua text over `q`)."""
    def rules(text: str) -> str:
        return "decide.indexed({" + ",".join(
            f'{{name = {lua_string(name)}, test = function(q) return {test} end}}'
            for name, test in (r.split("=>", 1) for r in text.split(";") if r.strip())) + "})"
    return runtime_source() + f"""
local POLICY = {{
  service = "svc", deny = {rules(deny)}, allow = {rules(allow)}, decides_allow = {str(decides_allow).lower()},
  dry_run = {str(dry_run).lower()}, payload_key = "jwt_payload",
}}
function envoy_on_request(handle)
  decide.run(handle, POLICY, request)
end
"""


@pytest.mark.parametrize(("deny", "allow", "decides_allow", "expected"), [
    ("d=> q.path == '/d'", "a=> true", True, ("deny", "d", 403)),
    ("d=> false", "a=> true", True, ("allow", "a", None)),
    ("d=> false", "a=> false", True, ("default-deny", None, 403)),
    ("d1=> false;d2=> true;d3=> true", "", True, ("deny", "d2", 403)),
    ("d=> false", "a=> false", False, ("no-deny", None, None)),
    ("d=> true", "", False, ("deny", "d", 403)),
])
@pytest.mark.parametrize("dry_run", [False, True])
def test_decide_records_and_enforces(deny, allow, decides_allow, expected, dry_run):
    outcome = run_script(policy_script(deny, allow, dry_run=dry_run, decides_allow=decides_allow),
                         envoy_request("GET", "/d"))
    decision, rule, status = expected
    assert outcome.error is None and outcome.logs == []
    assert outcome.metadata == {"policyc": {"service": "svc", "decision": decision, **({"rule": rule} if rule else {})}}
    assert outcome.status == (None if dry_run else status)
    if outcome.response:
        assert outcome.response.headers == {":status": "403", "content-type": "text/plain"}


@pytest.mark.parametrize(("deny", "allow"), [
    ("boom=> error('rule exploded')", "a=> true"),
    ("d=> false", "boom=> error('rule exploded')"),
    ("d=> false", "boom=> error({})"),  # not a string
    ("d=> false", "boom=> error()"),  # not even a value
    ("d=> q.nothing.field", "a=> true"),  # indexing nil
    ("d=> #q.payload.groups > 0", "a=> true"),  # no token: a rule that forgets to check
    ("d=> string.rep('x', -1) .. nil", ""),
])
@pytest.mark.parametrize("dry_run", [False, True])
def test_decide_fails_closed_when_a_rule_raises(deny, allow, dry_run):
    outcome = run_script(policy_script(deny, allow, dry_run=dry_run), envoy_request("GET", "/"))
    assert outcome.error is None
    assert outcome.status == (None if dry_run else 403)
    assert outcome.metadata == {"policyc": {"service": "svc", "decision": "error"}}
    assert [level for level, _ in outcome.logs] == ["error"]
    assert outcome.logs[0][1].startswith("policyc: error deciding for service svc: ")


# A policy touching every part of the API the runtime uses: metadata, every header call, the peer.
# Names sort in file order, so every rule runs before "b-header" decides.
EVERYTHING = r"""
issuer idp {
    url      "https://idp.cases.test"
    jwks file "keys/idp.jwks.json"
}
service svc {
    hosts    "svc.test"
    upstream "127.0.0.1:9000"
    MODE
    deny  "a-peer"    when source in ["10.9.0.0/16", "fd00::/8"]
    deny  "b-header"  when header "x-a" == "bad" or header "x-b" present or header "x-c" == token.sub
    allow "c-claims"  when token.sub == "nobody" and path glob "/a/**"
    allow public "d-path" when path == "/never"
}
"""


def everything_script(tmp_path: Path, dry_run: bool) -> str:
    (tmp_path / "keys").mkdir(exist_ok=True)
    shutil.copy(KEYS / "idp.jwks.json", tmp_path / "keys" / "idp.jwks.json")
    text = EVERYTHING.replace("MODE", "mode dry-run" if dry_run else "")
    (tmp_path / "svc.policy").write_text(text, encoding="utf-8")
    pipeline = load_and_check([str(tmp_path)])
    assert pipeline.ok, pipeline.diagnostics
    return service_script(pipeline.checked, pipeline.checked.services["svc"])


@pytest.mark.parametrize("fault", [f for f in FAULT_POINTS if f not in ("handle:respond", "handle:logErr")])
@pytest.mark.parametrize("dry_run", [False, True])
def test_compiled_script_fails_closed_wherever_the_api_fails(tmp_path, fault, dry_run):
    script = everything_script(tmp_path, dry_run)
    request = envoy_request("GET", "/a/b", [("x-c", "me")], claims={"iss": "https://idp.cases.test", "sub": "me"})
    clean = run_script(script, request)
    assert (clean.status, clean.decision, clean.rule) == (None if dry_run else 403, "deny", "b-header")
    outcome = run_script(script, Request(request.headers, request.peer, request.metadata, frozenset([fault])))
    assert outcome.error is None, outcome.error
    assert outcome.status == (None if dry_run else 403)
    assert ("error", f"policyc: error deciding for service svc: injected fault in {fault}") in outcome.logs
    # When the fault is in the metadata API itself, the decision cannot be recorded either.
    metadata_broken = fault in ("handle:streamInfo", "streamInfo:dynamicMetadata", "dynamicMetadata:set")
    assert outcome.metadata == ({} if metadata_broken else {"policyc": {"service": "svc", "decision": "error"}})


@pytest.mark.parametrize("peer", ["/tmp/envoy.sock", "envoy://internal", "", "[::1::]:80", "256.0.0.1:80",
                                  "[::a1.2.3.4]:80"])
@pytest.mark.parametrize("dry_run", [False, True])
def test_compiled_script_fails_closed_on_an_unreadable_peer(tmp_path, peer, dry_run):
    script = everything_script(tmp_path, dry_run)
    outcome = run_script(script, envoy_request("GET", "/a", source=peer))
    assert outcome.error is None
    assert outcome.status == (None if dry_run else 403)
    assert outcome.decision == "error"
    assert "cannot read the peer address" in outcome.logs[0][1]


@pytest.mark.parametrize("dry_run", [False, True])
def test_compiled_script_fails_closed_on_a_payload_that_is_not_an_object(tmp_path, dry_run):
    script = everything_script(tmp_path, dry_run)
    outcome = run_script(script, envoy_request("GET", "/a", metadata={JWT_NAMESPACE: {PAYLOAD_KEY: ["a"]}}))
    # A JSON array is a table too: the runtime reads it as a payload without these claims.
    assert (outcome.error, outcome.decision) == (None, "default-deny")
    outcome = run_script(script, envoy_request("GET", "/a", metadata={JWT_NAMESPACE: {PAYLOAD_KEY: "x"}}))
    assert (outcome.error, outcome.decision, outcome.status) == (None, "error", None if dry_run else 403)
