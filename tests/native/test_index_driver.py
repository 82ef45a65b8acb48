"""The native filter outside Envoy: tests/native/index_driver.c plays Envoy's callbacks around
native_runtime/policy_filter.c, built with the address and undefined-behaviour sanitizers (and the
leak checker), so that many configs and requests run in one process and any bad read, overflow or
leak fails the test. Covered here: the config format accepted exactly and nothing else (each way to
get it wrong, and thousands of mutated configs), the decision on corner cases Envoy cannot be made to
produce (a missing :path, an unreadable peer), and globs and networks decided as the interpreter
decides them (policyc/semantics). test_native_index.py shows the same filter in a real Envoy."""

from __future__ import annotations

import base64
import ipaddress
import os
import random
import subprocess
from pathlib import Path

import pytest

from policyc.backends import native
from policyc.cases.casefile import load_case_file
from policyc.interpret import RawRequest, evaluate
from policyc.nodes import Op
from policyc.pipeline import load_and_check
from policyc.semantics import tokenjson, tokens
from policyc.semantics.compare import compare_string
from policyc.semantics.glob import ANY, glob_matches, parse_glob
from policyc.semantics.net import address_in, cidr_error
from policyc.semantics.tokens import claim_value

from .conftest import build_driver, index_config, section, x

# A sanitizer's finding exits with its own code, never 0 or the driver's 1 (refused config).
SANITIZERS = {"ASAN_OPTIONS": "exitcode=86:detect_leaks=1", "LSAN_OPTIONS": "exitcode=87",
              "UBSAN_OPTIONS": "exitcode=88:print_stacktrace=1"}

Request = tuple[str | None, str | None, str | None, str | None, list[tuple[str, str]]]  # service, method, path, peer


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Path:
    return build_driver(tmp_path_factory.mktemp("driver"))


def run(args: list, stdin: bytes) -> subprocess.CompletedProcess:
    return subprocess.run(args, input=stdin, capture_output=True, timeout=300, env={**os.environ, **SANITIZERS})


def parse_many(driver: Path, configs: list[bytes]) -> list[bool]:
    """Whether the filter accepts each config."""
    result = run([driver, "--parse-many"], b"".join(b"%d\n%s" % (len(config), config) for config in configs))
    assert result.returncode == 0, result.stderr.decode()
    answers = result.stdout.decode().split()
    assert len(answers) == len(configs)
    return [answer == "accepted" for answer in answers]


def token(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        return "x" + value.hex()
    return "-" if value is None else x(value)


def decide(driver: Path, tmp_path: Path, config: str | bytes,
           requests: list[Request]) -> list[tuple[str, str | None, int]]:
    """(decision, rule, status: 403, or 200 for a request the filter lets continue, 0 for one whose
    route config it refuses) of each request."""
    (tmp_path / "config").write_bytes(config if isinstance(config, bytes) else config.encode())
    lines = [" ".join([token(service), token(method), token(path), token(peer),
                       *(token(part) for header in headers for part in header)])
             for service, method, path, peer, headers in requests]
    result = run([driver, tmp_path / "config"], "".join(f"{line}\n" for line in lines).encode())
    assert result.returncode == 0, result.stderr.decode()
    answers = [line.split(" ") for line in result.stdout.decode().splitlines()]
    assert len(answers) == len(requests)
    return [(decision, None if rule == "-" else bytes.fromhex(rule[1:]).decode(errors="replace"),
             {"403": 403, "continue": 200}.get(answer, 0))
            for decision, rule, answer in answers]


def get(path: str, service: str = "shop", peer: str = "127.0.0.1:1000", headers=(), method: str = "GET") -> Request:
    return service, method, path, peer, list(headers)


# ---------------------------------------------------------------- the format

GOOD = index_config(section("shop", [
    f"cond 0 method 1 {x('GET')}",
    f"cond 1 and 2 ref 0 path prefix {x('/api/')}",
    f"deny {x('d')} header {x('x-a')} eq 1 {x('b')}",
    f"allow {x('a')} or 2 ref 1 source 1 4/8/0a000000",
    f"allow {x('g')} path glob 3 seg 1 x any seg 2 x {x('.md')}",
    "share x 3 0 1 2",
    f"share {x('/api/')} 3 0 1 2",
]), section("lab", [f"allow {x('all')} and 0"], mode="dry-run"))


def edit(old: str, new: str, text: str = GOOD) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def with_chain(lines: str) -> str:
    """GOOD with `lines` in place of its `chain` line: the listener's config."""
    return edit("chain jwt\n", lines)


def glob_token(pattern: str) -> str:
    """`path glob` of the pattern, in parse_glob's form."""
    segments = parse_glob(pattern)
    return f"path glob {len(segments)} " + " ".join(
        "any" if pieces is ANY else f"seg {len(pieces)} " + " ".join(map(x, pieces)) for pieces in segments)


def nested(depth: int) -> str:
    """An expression `depth` levels deep."""
    return "not " * (depth - 1) + "method 0"


BAD_CONFIGS = {
    "empty": "",
    "no header": GOOD.removeprefix("policyc-native 5\n"),
    "another version": edit("policyc-native 5", "policyc-native 4"),
    "header without newline": "policyc-native 5",
    "no final newline": GOOD.removesuffix("\n"),
    "an empty line": edit("end\n", "end\n\n"),
    "CRLF": GOOD.replace("\n", "\r\n"),
    "a leading space": edit("mode enforce", " mode enforce"),
    "a trailing space": edit("mode enforce", "mode enforce "),
    "two spaces": edit("mode enforce", "mode  enforce"),
    "a tab": edit("mode enforce", "mode\tenforce"),
    "a NUL byte": edit("mode enforce", "mode enforce\0"),
    "a comment": edit("mode enforce\n", "mode enforce\n# rules\n"),
    "an unknown line": edit("end\n", "permit x61 and 0\nend\n"),
    "an unknown atom": edit("method 1", "verb 1"),
    "an unknown path test": edit("path prefix", "path suffix"),
    "an unknown header test": edit("eq 1 x62", "contains 1 x62"),
    "an unknown mode": edit("mode enforce", "mode audit"),
    "no mode": edit("mode enforce\n", ""),
    "two modes": edit("mode enforce\n", "mode enforce\nmode enforce\n"),
    "hex in upper case": edit(x("x-a"), x("x-a").upper()),
    "odd hex": edit(x("x-a"), x("x-a") + "6"),
    "not hex": edit(x("x-a"), "x2g"),
    "a string without x": edit(x("x-a"), x("x-a")[1:]),
    "a string with X": edit(x("x-a"), "X" + x("x-a")[1:]),
    "a number with a leading zero": edit("method 1", "method 01"),
    "a negative number": edit("cond 0", "cond -0"),
    "a signed number": edit("method 1", "method +1"),
    "a huge number": edit("method 1", "method 99999999999"),
    "a count too high": edit("method 1", "method 2"),
    "a count too low": edit(f"method 1 {x('GET')}", f"method 1 {x('GET')} {x('PUT')}"),
    "and with too few operands": edit("and 2", "and 3"),
    "or with more operands than its count": edit("or 2", "or 1"),
    "a ref to a later condition": edit("ref 0", "ref 1"),
    "a ref to itself": edit("cond 0 method 1", "cond 0 ref 0"),
    "a ref beyond the conditions": edit("ref 1", "ref 2"),
    "a ref to another section's condition": edit("and 0", "ref 0"),
    "conditions out of order": edit("cond 1", "cond 2"),
    "a condition twice": edit("cond 1", "cond 0"),
    "a condition after a rule": edit("end\nservice", "cond 2 method 0\nend\nservice"),
    "a deny after an allow": edit("end\nservice", f"deny {x('late')} method 0\nend\nservice"),
    "a rule without expression": edit(f"allow {x('all')} and 0", f"allow {x('all')}"),
    "a rule without name": edit(f"allow {x('all')} and 0", "allow and 0"),
    "a trailing token": edit(f"allow {x('all')} and 0", f"allow {x('all')} and 0 method 0"),
    "a trailing token after end": edit("end\nservice", "end x61\nservice"),
    "a service without name": edit(f"service {x('lab')}", "service"),
    "a service with two names": edit(f"service {x('lab')}", f"service {x('lab')} {x('b')}"),
    "a section without end": GOOD.removesuffix("end\n"),
    "a section inside a section": edit("end\nservice", "service"),
    "a rule outside a section": edit("end\nservice", f"end\nallow {x('a')} and 0\nservice"),
    "an empty header name": edit(f"header {x('x-a')}", "header x"),
    "a header name in upper case": edit(f"header {x('x-a')}", f"header {x('X-A')}"),
    "a header name with a newline": edit(f"header {x('x-a')}", f"header {x('x-a' + chr(10))}"),
    "a present header without name": edit("and 0", "present x"),
    "a glob segment without pieces": edit("seg 1 x any", "seg 0 any"),
    "a glob of too few segments": edit("path glob 3", "path glob 4"),
    "a glob segment neither any nor seg": edit("x any seg", "x all seg"),
    "an IPv4 prefix too long": edit("4/8/", "4/33/"),
    "an IPv6 prefix too long": edit("4/8/0a000000", "6/129/" + "0" * 32),
    "an IPv4 network of 7 digits": edit("4/8/0a000000", "4/8/0a00000"),
    "an IPv4 network in upper case": edit("4/8/0a000000", "4/8/0A000000"),
    "an IPv4 network of IPv6 size": edit("4/8/0a000000", "4/8/" + "0" * 32),
    "a network family 5": edit("4/8/0a000000", "5/8/0a000000"),
    "a prefix with a leading zero": edit("4/8/", "4/08/"),
    "no prefix length": edit("4/8/", "4//"),
    "a network with a trailing slash": edit("4/8/0a000000", "4/8/0a000000/"),
    "a network without address": edit("4/8/0a000000", "4/8"),
    "a share before a rule": edit(f"allow {x('g')}", f"share {x('/')} 0\nallow {x('g')}"),
    "a rule after a share": edit("end\nservice", f"allow {x('late')} method 0\nend\nservice"),
    "a condition after a share": edit("end\nservice", "cond 2 method 0\nend\nservice"),
    "a share without prefix": edit("share x 3", "share 3"),
    "a share twice": edit("share x 3 0 1 2\n", "share x 3 0 1 2\nshare x 3 0 1 2\n"),
    "a longer prefix first": edit("share x 3 0 1 2\n", f"share {x('/')} 0\nshare x 3 0 1 2\n"),
    "prefixes of one length out of order": edit(f"share {x('/api/')} 3 0 1 2", f"share {x('/api/')} 3 0 1 2\n"
                                                                                f"share {x('/abc/')} 0"),
    "a share of a rule beyond the section's": edit("share x 3 0 1 2", "share x 3 0 1 3"),
    "a share's rules out of order": edit("share x 3 0 1 2", "share x 3 0 2 1"),
    "a rule twice in a share": edit("share x 3 0 1 2", "share x 3 0 1 1"),
    "a share count too high": edit("share x 3 0 1 2", "share x 4 0 1 2"),
    "a share count too low": edit("share x 3 0 1 2", "share x 2 0 1 2"),
    "a share number with a leading zero": edit("share x 3 0 1 2", "share x 3 00 1 2"),
    "a claim without path": edit("and 0", "claim 0 eq 0"),
    "an unknown claim test": edit("and 0", f"claim 1 {x('a')} in 1 {x('b')}"),
    "a claim test without test": edit("and 0", f"claim 1 {x('a')}"),
    "a claim prefix of two values": edit("and 0", f"claim 1 {x('a')} prefix {x('b')} {x('c')}"),
    "a claim bool with a value": edit("and 0", f"claim 1 {x('a')} true {x('b')}"),
    "a header claim without path": edit("and 0", f"header {x('x-a')} claim 0"),
    "token with an argument": edit("and 0", "token 1"),
    "peer without test": edit("and 0", "peer"),
    "peer uri without test": edit("and 0", "peer uri"),
    "peer dns with an unknown test": edit("and 0", f"peer dns glob {x('a')}"),
    "peer issuer": edit("and 0", f"peer issuer eq 1 {x('a')}"),
    "peer subject without test": edit("and 0", "peer subject"),
    "peer trusted with an argument": edit("and 0", f"peer trusted {x('mesh')}"),
    "a time with one bound": edit("and 0", "time 1"),
    "a time past the year 9999": edit("and 0", "time 0 253402300800"),
    "a time of 20 digits": edit("and 0", "time 0 10000000000000000000"),
    "a time with a leading zero": edit("and 0", "time 01 2"),
    "a negative time": edit("and 0", "time -1 2"),
    "a chain after a service": GOOD + "chain rbac-allow\n",
    "a chain twice": with_chain("chain lua\nchain rbac-allow\n"),
    "a chain with an unknown filter": with_chain("chain rbac\n"),
    "a chain out of order": with_chain("chain rbac-allow lua\n"),
    "a chain naming a filter twice": with_chain("chain lua lua\n"),
    "jwt after a policy filter": with_chain("chain rbac-deny jwt\n"),
    "a relies line in the listener's config": with_chain("relies lua\n"),
    "a rule too deep": edit(f"allow {x('all')} and 0", f"allow {x('all')} {nested(257)}"),
    "too deep through a condition": edit(
        f"cond 1 and 2 ref 0 path prefix {x('/api/')}", f"cond 1 {nested(200)}").replace(
        f"allow {x('a')} or 2", f"allow {x('a')} {'not ' * 56}or 2"),
}

GOOD_CONFIGS = {
    "the example": GOOD,
    "a chain of every other filter": with_chain("chain jwt rbac-deny lua rbac-allow\n"),
    "no chain line": with_chain(""),
    "an empty chain": with_chain("chain\n"),
    "no service": index_config(),
    "a service without rules": index_config(section("a", [])),
    "empty strings": index_config(section("", [f"allow x header {x('x-a')} eq 2 x x"])),
    "a pseudo-header's name": index_config(section("a", [f"allow x61 present {x(':authority')}"])),
    "empty lists": index_config(section("a", ["allow x61 or 4 and 0 method 0 path eq 0 source 0"])),
    "non-ASCII strings": index_config(section("sérvice", [f"allow {x('règle')} path prefix {x('/é')}"])),
    "services in any order": index_config(section("b", []), section("a", []), section("c", [])),
    "a rule as deep as allowed": index_config(section("a", [f"allow x61 {nested(256)}"])),
    "as deep as allowed through a condition": edit(
        f"cond 1 and 2 ref 0 path prefix {x('/api/')}", f"cond 1 {nested(200)}").replace(
        f"allow {x('a')} or 2", f"allow {x('a')} {'not ' * 54}or 2"),
    "shares of several lengths": index_config(section("a", [
        "deny x61 and 0", "allow x62 and 0", "share x 0", f"share {x('/a')} 1 1", f"share {x('/b')} 2 0 1",
        f"share {x('/ab')} 1 0"])),
    "every atom": index_config(section("a", [
        f"allow x61 and 8 method 1 x {glob_token('/a/**/*.md')} path eq 1 x path prefix x "
        f"header x61 eq 1 x header x61 prefix x header x61 suffix x present x61",
        "allow x62 source 2 4/0/00000000 6/128/" + "f" * 32,
        "allow x63 and 8 token claim 1 x eq 0 claim 2 x61 x62 eq 2 x x63 claim 1 x61 prefix x "
        "claim 1 x61 suffix x62 claim 1 x61 contains 1 x claim 1 x61 true claim 1 x61 false",
        f"allow x64 header {x('x-a')} claim 3 x61 x x63",
        "allow x65 and 4 peer trusted peer subject eq 2 x x61 peer subject prefix x peer subject suffix x61",
        "allow x67 and 6 peer uri eq 2 x x61 peer uri prefix x peer uri suffix x61 peer dns eq 0 "
        "peer dns prefix x61 peer dns suffix x",
        "allow x66 or 2 time 0 253402300799 time 4294967296 4294967297"])),
}


def test_each_malformed_config_is_refused_and_each_good_one_taken(driver):
    configs = [*BAD_CONFIGS.values(), *GOOD_CONFIGS.values()]
    accepted = parse_many(driver, [config.encode() for config in configs])
    assert dict(zip([*BAD_CONFIGS, *GOOD_CONFIGS], accepted, strict=True)) == {
        **dict.fromkeys(BAD_CONFIGS, False), **dict.fromkeys(GOOD_CONFIGS, True)}


def mutants(text: bytes, count: int, seed: int) -> list[bytes]:
    """`text` with random bytes deleted, inserted, replaced or repeated, tokens moved, or cut short."""
    rng = random.Random(seed)
    alphabet = b" \n0123456789abcdefx/-" + bytes(range(256))
    out = []
    for _ in range(count):
        data = bytearray(text)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data) + 1)
            match rng.randrange(5):
                case 0:
                    del data[at:at + rng.randint(1, 8)]
                case 1:
                    data[at:at] = bytes([rng.choice(alphabet)])
                case 2:
                    data[at:at + 1] = bytes([rng.choice(alphabet)])
                case 3:
                    data[at:at] = data[at:at + rng.randint(1, 40)]
                case _:
                    data = data[:at]
        out.append(bytes(data))
    return out


def test_mutated_configs_never_crash(driver, tmp_path):
    """Every mutant is accepted or refused, under the sanitizers, and the parse is exact enough that
    most are refused; the first accepted ones then decide requests, still without a finding."""
    configs = mutants(GOOD_CONFIGS["every atom"].encode(), 2000, 1) + mutants(GOOD.encode(), 2000, 2)
    accepted = [config for config, taken in zip(configs, parse_many(driver, configs), strict=True) if taken]
    assert len(accepted) < len(configs) / 4
    requests = [get("/api/a.md", service, peer, [("x-a", "b"), ("a", "")], method)
                for service in ("shop", "lab", "a") for peer in ("10.0.0.1:1", "[::1]:2", "bad")
                for method in ("GET", "PUT")]
    for config in accepted[:40]:
        decided = decide(driver, tmp_path, config, requests)
        assert {decision for decision, _, _ in decided} <= {"allow", "deny", "default-deny", "error"}


# ---------------------------------------------------------------- decisions

SHOP = section("shop", [
    f"cond 0 method 2 {x('GET')} {x('HEAD')}",
    f"deny {x('z-first')} header {x('x-user')} eq 1 {x('mallory')}",
    f"deny {x('a-second')} header {x('x-user')} prefix {x('mal')}",
    f"allow {x('empty-prefix')} and 2 path eq 1 {x('/any-x')} header {x('x-a')} prefix x",
    f"allow {x('root')} and 2 ref 0 path eq 2 x {x('/')}",
    f"allow {x('source')} and 2 path eq 1 {x('/net')} source 2 4/8/0a000000 6/32/20010db8{'0' * 24}",
    f"allow {x('suffix')} and 2 path eq 1 {x('/s')} header {x('x-a')} suffix {x('.internal')}",
    f"allow {x('true')} and 2 path eq 1 {x('/and0')} and 0",
    f"allow {x('false')} and 2 path eq 1 {x('/or0')} or 0",
    # Grants' windows, by the machine's clock: one holding now (to the end of the year 9999), one
    # over (the first second of 1970), one to come (past 2106: the 64-bit halves).
    f"allow {x('window-now')} and 2 path eq 1 {x('/now')} time 1 253402300799",
    f"allow {x('window-over')} and 2 path eq 1 {x('/over')} time 0 1",
    f"allow {x('window-to-come')} and 2 path eq 1 {x('/to-come')} time 4294967296 253402300799",
])
LAB = section("lab", [f"allow {x('net')} source 1 4/32/0a000001"], mode="dry-run")
DECISIONS = [
    (get("/any-x", headers=[("x-user", "mallory")]), ("deny", "z-first", 403)),  # file order, not name
    (get("/any-x", headers=[("x-user", "malcolm")]), ("deny", "a-second", 403)),
    (get("/any-x", headers=[("x-a", "")]), ("allow", "empty-prefix", 200)),
    (get("/any-x"), ("default-deny", None, 403)),
    (get(""), ("allow", "root", 200)),
    (get("?a=b"), ("allow", "root", 200)),
    (get("/?a=b?c"), ("allow", "root", 200)),
    (get("/", method="POST"), ("default-deny", None, 403)),
    (get("/s", headers=[("x-a", "a.internal"), ("x-a", "b")]), ("allow", "suffix", 200)),
    (get("/s", headers=[("x-a", "b"), ("x-a", "a.internal")]), ("allow", "suffix", 200)),
    (get("/s", headers=[("x-a", "a.internal.com")]), ("default-deny", None, 403)),
    (get("/and0"), ("allow", "true", 200)),
    (get("/or0"), ("default-deny", None, 403)),
    (get("/now"), ("allow", "window-now", 200)),
    (get("/over"), ("default-deny", None, 403)),
    (get("/to-come"), ("default-deny", None, 403)),
    (get("/net", peer="10.9.8.7:1"), ("allow", "source", 200)),
    (get("/net", peer="[::ffff:10.9.8.7]:1"), ("allow", "source", 200)),  # IPv4-mapped: as IPv4
    (get("/net", peer="[2001:db8::1]:443"), ("allow", "source", 200)),
    (get("/net", peer="[2001:db9::1]:443"), ("default-deny", None, 403)),
    (get("/net", peer="[::10.9.8.7]:1"), ("default-deny", None, 403)),  # IPv4-compatible: stays IPv6
    (get("/net", peer="11.0.0.1:1"), ("default-deny", None, 403)),
    (get("/net", peer="10.0.0.1"), ("error", None, 403)),  # Envoy always gives the port
    (get("/net", peer="/tmp/envoy.sock"), ("error", None, 403)),
    (get("/net", peer=None), ("error", None, 403)),
    (get("/", peer=None), ("allow", "root", 200)),  # the peer is read only when a rule needs it
    (get("/", method=None), ("error", None, 403)),
    (get(None), ("error", None, 403)),
    (get("/", service=None), ("error", None, 403)),
    (get("/", service="Shop"), ("error", None, 403)),
    (get("/", service=""), ("error", None, 403)),
    (get("/", service="lab", peer="10.0.0.1:5"), ("allow", "net", 200)),
    (get("/", service="lab", peer="10.0.0.2:5"), ("default-deny", None, 200)),  # dry-run: continues
    (get("/", service="lab", peer="nonsense"), ("error", None, 200)),  # an error too
]


def test_decisions(driver, tmp_path):
    requests = [request for request, _ in DECISIONS]
    assert decide(driver, tmp_path, index_config(SHOP, LAB), requests) == [expected for _, expected in DECISIONS]


START, END = 4102444800, 4102459200  # 2100-01-01T00:00:00Z and 04:00:00Z
WINDOWS = section("shop", [f"allow {x('grant/oncall')} and 2 time {START} {END} header {x('x-user')} eq 1 {x('alice')}",
                           f"allow {x('grant/later')} time 4294967296 4294967300"])  # past 2106: 64 bits


@pytest.mark.parametrize(("clock", "rule"), [
    (START - 1, None), (START, "grant/oncall"), (END - 1, "grant/oncall"), (END, None), (0, None),
    (4294967295, None), (4294967296, "grant/later"), (4294967299, "grant/later"), (4294967300, None)])
def test_a_window_holds_from_its_start_until_just_before_its_end(driver, tmp_path, clock, rule):
    [decided] = decide(driver, tmp_path, index_config(WINDOWS),
                       [get("/", headers=[("x-user", "alice"), (":clock", str(clock))])])
    assert decided == (("allow", rule, 200) if rule else ("default-deny", None, 403))


ELSEWHERE = [("rbac-allow", "continue"), ("rbac-deny rbac-allow", "continue"), ("lua rbac-allow", "error"),
             (None, "error"), ("", "refused"), ("rbac-allow ", "refused"), ("rbac-allow  rbac-deny", "refused"),
             ("rbac-allow rbac-deny", "refused"), ("rbac", "refused"), ("jwt rbac-allow", "refused")]


@pytest.mark.parametrize(("relied_on", "answer"), ELSEWHERE)
def test_a_service_decided_elsewhere_passes_only_where_the_chain_holds_its_filters(driver, tmp_path, relied_on,
                                                                                    answer):
    """A route whose config names the filters its service relies on (`relies`): the filter lets it
    on, recording nothing, only when its chain holds every one; a name it does not know, or a list
    not as the compiler writes it, is a route config the filter refuses (Envoy then rejects the
    routes), and a route with no config at all (None) is `error`."""
    config = with_chain("chain rbac-deny rbac-allow\n")
    headers = [] if relied_on is None else [(":route-filters", relied_on)]
    expected = {"continue": ("-", None, 200), "error": ("error", None, 403), "refused": ("refused", None, 0)}[answer]
    assert decide(driver, tmp_path, config, [get("/api/x", service="other", headers=headers)]) == [expected]


def test_a_route_naming_filters_is_not_decided_by_any_section(driver, tmp_path):
    """A service moved off the native filter: its route names the filters it relies on, and is let
    on (or refused) by that check alone, never decided by the rules its service had."""
    config = with_chain("chain rbac-allow\n")
    denied = get("/x", headers=[("x-a", "b")])  # `shop`'s deny rule `d` holds
    moved = [get("/x", headers=[("x-a", "b"), (":route-filters", relied_on)]) for relied_on in ("rbac-allow", "lua")]
    assert decide(driver, tmp_path, config, [denied, *moved]) == [
        ("deny", "d", 403), ("-", None, 200), ("error", None, 403)]


def test_a_verdict_the_stream_does_not_take_is_refused(driver, tmp_path):
    """The verdict is recorded in the stream's filter state for the log: where Envoy does not take
    it, nothing is recorded and the request is refused, however it was decided (dry-run: it goes
    on, as every request of that service does)."""
    fails = [(":state-fails", "")]
    requests = [get("/api/x", headers=fails), get("/x", headers=[("x-a", "b"), *fails]),
                get("/", service="lab", headers=fails)]
    assert decide(driver, tmp_path, GOOD, requests) == [("-", None, 403), ("-", None, 403), ("-", None, 200)]


def test_a_verdict_already_in_the_stream_is_never_taken_for_the_filters(driver, tmp_path):
    """Envoy keeps a value already under the verdict's key and says it took the new one: the filter
    reads the value back, and refuses a request whose stream holds any verdict but its own (the
    log, and an allow RBAC filter behind, would read the one already there)."""
    requests = [get("/api/x", headers=[(":state-held", "allow other")]),  # the filter allows by `a`
                get("/api/x", headers=[(":state-held", "allow a")]),  # its own verdict, as it happens
                get("/x", service="lab", headers=[(":state-held", "deny x")])]  # dry-run: goes on
    assert decide(driver, tmp_path, GOOD, requests) == [
        ("allow", "other", 403), ("allow", "a", 200), ("deny", "x", 200)]


def test_a_long_rule_name_is_recorded_whole(driver, tmp_path):
    name = "r" * 300 + " with spaces"
    config = index_config(section("shop", [f"allow {x(name)} and 0"]))
    assert decide(driver, tmp_path, config, [get("/")]) == [("allow", name, 200)]


def test_a_route_without_a_config_decides_error(driver, tmp_path):
    """No section for the service: its route gives the filter no config of its own."""
    assert decide(driver, tmp_path, index_config(), [get("/")]) == [("error", None, 403)]


def test_each_condition_is_evaluated_once_per_request(driver, tmp_path):
    """Condition i refers to condition i-1 twice: written out, 2^60 tests, and the request would
    never be decided. Memoized, it takes 60."""
    conditions = [f"cond 0 path prefix {x('/a')}", *(f"cond {i} and 2 ref {i - 1} ref {i - 1}" for i in range(1, 61))]
    config = index_config(section("shop", [*conditions, f"allow {x('deep')} ref 60"]))
    assert decide(driver, tmp_path, config, [get("/a"), get("/b")]) == [("allow", "deep", 200),
                                                                        ("default-deny", None, 403)]


def test_more_conditions_than_the_stack_holds(driver, tmp_path):
    conditions = [f"cond {i} path eq 1 {x(f'/{i}')}" for i in range(300)]
    config = index_config(section("shop", [*conditions, f"allow {x('last')} ref 299"]))
    assert decide(driver, tmp_path, config, [get("/299"), get("/1")]) == [("allow", "last", 200),
                                                                          ("default-deny", None, 403)]


# ---------------------------------------------------------------- shares

# Rules 0 `d` (deny), 1 `a`, 2 `b`, 3 `any`, 4 `c`. The filter trusts the shares, even where they
# leave out a rule that would match (`/a/b/` lacks `d`), which shows that they are what is tested.
SHARED = section("shop", [
    f"deny {x('d')} path prefix {x('/a/')}",
    f"allow {x('a')} path prefix {x('/a')}",
    f"allow {x('b')} path prefix {x('/a/b')}",
    f"allow {x('any')} header {x('x-any')} eq 1 {x('1')}",
    f"allow {x('c')} path eq 1 {x('c')}",
    f"share {x('/')} 1 3",
    f"share {x('/a')} 2 1 3",
    f"share {x('/b')} 0",
    f"share {x('/a/')} 3 0 1 3",
    f"share {x('/a/b/')} 2 2 3",
])


@pytest.mark.parametrize(("request_", "expected"), [
    (get("/a"), ("allow", "a", 200)),
    (get("/ab"), ("allow", "a", 200)),
    (get("/a/x"), ("deny", "d", 403)),  # the share of `/a/`, the longest prefix: deny before allow
    (get("/a/b/c"), ("allow", "b", 200)),  # the share of `/a/b/`, without `d`
    (get("/b/c", headers=[("x-any", "1")]), ("default-deny", None, 403)),  # an empty share
    (get("/c", headers=[("x-any", "1")]), ("allow", "any", 200)),
    (get("c"), ("allow", "c", 200)),  # no share's prefix: every rule
    (get("?/b", headers=[("x-any", "1")]), ("allow", "any", 200)),  # the path without the query: ""
])
def test_a_path_is_decided_by_the_share_of_its_longest_prefix(driver, tmp_path, request_, expected):
    assert decide(driver, tmp_path, index_config(SHARED), [request_]) == [expected]


SHARED_POLICY = """
service {name} {{
    hosts ["{name}.test"]
    upstream "127.0.0.1:8080"
    {mode}
    deny "admin" when path prefix "/admin/"
    deny "blocked" when header "x-block" present
    allow "api-read" when method == GET and path prefix "/api/"
    allow "api-v2" when path prefix "/api/v2/"
    allow "health" when path == "/health"
    allow "items" when path glob "/items/*/x"
    allow "either" when path prefix "/x/" or path == "/y"
    allow "by-header" when header "x-let" == "1" and method == POST
}}
"""
PATHS = ["/", "/admin/a", "/admin", "/api/", "/api/v2/z", "/api/v1", "/api/v2", "/health", "/healthz",
         "/items/1/x", "/items/1/y", "/x/1", "/y", "/yy", "/nowhere"]


def test_shares_decide_as_the_interpreter(driver, tmp_path):
    """A compiled policy whose shares leave rules out of most paths' shares, enforced and dry-run:
    every request, whatever rules its share lacks, decided as the interpreter decides it."""
    text = SHARED_POLICY.format(name="enforced", mode="") + SHARED_POLICY.format(name="dry", mode="mode dry-run")
    (tmp_path / "p.policy").write_text(text)
    checked = load_and_check([str(tmp_path / "p.policy")]).checked
    config = native.HEADER + "".join(native.service_section(checked, service) for service in checked.services.values())
    assert config.count("share ") == 2 * 8  # "/" and the seven prefixes the rules need
    cases = [(service, method, path, headers) for service in ("enforced", "dry") for path in PATHS
             for method in ("GET", "POST") for headers in ((), (("x-block", ""),), (("x-let", "1"),))]
    decided = decide(driver, tmp_path, config,
                     [get(path, service, headers=headers, method=method) for service, method, path, headers in cases])
    expected = []
    for service, method, path, headers in cases:
        decision = evaluate(checked, RawRequest(method, path, f"{service}.test", headers))
        expected.append((decision.reason, decision.rule, 200 if decision.status == 200 else 403))
    assert decided == expected
    assert {reason for reason, _, _ in decided} == {"allow", "deny", "default-deny"}


# ---------------------------------------------------------------- globs and networks, as the interpreter

def random_glob(rng: random.Random) -> str:
    segments = ["", "a", "b", ".", "*", "**", "a*", "*a", "a*b", "*.*", "*a*", "**"]
    return "/" + "/".join(rng.choice(segments) if rng.random() < 0.7 else
                          "".join(rng.choice("ab.*") for _ in range(rng.randint(0, 4)))
                          for _ in range(rng.randint(0, 5)))


def random_path(rng: random.Random) -> str:
    if rng.random() < 0.8:
        return "/" + "/".join("".join(rng.choice("ab.") for _ in range(rng.randint(0, 3)))
                              for _ in range(rng.randint(0, 6)))
    return "".join(rng.choice("ab./*") for _ in range(rng.randint(0, 10)))


def test_globs_match_as_the_interpreter(driver, tmp_path):
    """lua_runtime/glob.lua's algorithm, compared with policyc/semantics/glob.py on 300 random
    patterns, 20 paths each."""
    rng = random.Random(7)
    patterns = sorted({random_glob(rng) for _ in range(300)} | {"/a/**/b/**", "/*a*a*b", "/**/", "/**", "/"})
    sections = [section(pattern, [f"allow {x('m')} {glob_token(pattern)}"]) for pattern in patterns]
    pairs = [(pattern, path) for pattern in patterns
             for path in [random_path(rng) for _ in range(20)] + ["/a/b/x/b", "/aaab", "/"]]
    decided = decide(driver, tmp_path, index_config(*sections), [get(path, pattern) for pattern, path in pairs])
    wrong = [(pattern, path) for (pattern, path), (decision, _, _) in zip(pairs, decided, strict=True)
             if (decision == "allow") != glob_matches(pattern, path)]
    assert wrong == []


def test_globs_are_linear_on_pathological_patterns(driver, tmp_path):
    # Backtracking would not come back from these (the Lua runtime's cases, tests/lua/test_runtime.py).
    cases = [("/" + "*a" * 40 + "*b", "/" + "a" * 20_000, False), ("/" + "*a" * 40 + "*b*", "/" + "a" * 20_000, False),
             ("/" + "*a" * 40 + "*b*", "/" + "a" * 20_000 + "b", True),
             ("/**/a" * 40 + "/b", "/a" * 5_000, False), ("/**/a" * 40 + "/b", "/a" * 5_000 + "/b", True)]
    config = index_config(*(section(str(i), [f"allow {x('m')} {glob_token(p)}"]) for i, (p, _, _) in enumerate(cases)))
    decided = decide(driver, tmp_path, config, [get(path, str(i)) for i, (_, path, _) in enumerate(cases)])
    assert [decision == "allow" for decision, _, _ in decided] == [matches for _, _, matches in cases]


def network_token(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    return f"{network.version}/{network.prefixlen}/{network.network_address.packed.hex()}"


def peer_texts(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> list[str]:
    """How Envoy may write the peer: "a.b.c.d:port", "[v6]:port" (and other spellings of v6)."""
    if address.version == 4:
        mapped = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + address.packed)
        return [f"{address}:{port}", f"[::ffff:{address}]:{port}", f"[{mapped.exploded}]:{port}"]
    return [f"[{address.compressed}]:{port}", f"[{address.exploded.upper()}]:{port}"]


def random_network(rng: random.Random) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    while True:
        bits = rng.choice([32, 128])
        length = rng.randint(0, bits)
        value = rng.getrandbits(bits) >> (bits - length) << (bits - length) if length else 0
        text = f"{ipaddress.ip_address(value if bits == 32 else value.to_bytes(16, 'big'))}/{length}"
        if cidr_error(text) is None:
            return ipaddress.ip_network(text)


def test_networks_match_as_the_interpreter(driver, tmp_path):
    """`source` on 200 random networks, peers inside, at the edges and outside, in every spelling."""
    rng = random.Random(11)
    networks = [random_network(rng) for _ in range(200)]
    sections = [section(str(i), [f"allow {x('in')} source 1 {network_token(n)}"]) for i, n in enumerate(networks)]
    cases = []
    for i, network in enumerate(networks):
        size = network.num_addresses
        inside = [network.network_address, network.broadcast_address,
                  network.network_address + rng.randrange(size)]
        outside = [ipaddress.ip_address(rng.getrandbits(network.max_prefixlen) if network.version == 4
                                        else rng.getrandbits(128).to_bytes(16, "big")),
                   ipaddress.ip_address(rng.getrandbits(32))]
        port = rng.randrange(65536)
        cases += [(i, network, peer, text) for peer in inside + outside for text in peer_texts(peer, port)]
    decided = decide(driver, tmp_path, index_config(*sections), [get("/", str(i), text) for i, _, _, text in cases])
    wrong = [(str(network), text) for (_, network, peer, text), (decision, _, _) in zip(cases, decided, strict=True)
             if (decision == "allow") != address_in(str(peer), [str(network)])]
    assert wrong == []


@pytest.mark.parametrize("address", [
    "256.1.1.1:80", "1.2.3:80", "1.2.3.4.5:80", "a.b.c.d:80", "", "envoy_internal", "[::1]", "1.2.3.4:",
    "1.2.3.4:123456",
    "[1:2:3:4:5:6:7:8:9]:1", "[1::2::3]:1", "[12345::]:1", "[::g]:1", "[1:2:3:4:5:6:7::8]:1", "[:1:2:3:4:5:6:7]:1",
    "[1.2.3.4]:1", "[::1.2.3]:1", "[::1.2.3.256]:1", "[1:2:3:4:5:6:7:1.2.3.4]:1", "[1::2:]:1", "[:::]:1",
    "[::a1.2.3.4]:1", "[1:::1.2.3.4]:1", "[::ffff:1.2.3.4:5]:1", "[1.2.3.4::]:1", "[fe80::1%eth0]:1", "[::1]:x",
    "[::1]1", "::1:80", "[" + "1:" * 40 + "]:1",
])
def test_what_is_not_an_address_is_an_error(driver, tmp_path, address):
    config = index_config(section("shop", ["allow x61 source 2 4/0/00000000 6/0/" + "0" * 32]))
    assert decide(driver, tmp_path, config, [get("/", peer=address)]) == [("error", None, 403)]


# ---------------------------------------------------------------- token claims, as the interpreter

PAYLOAD_HEADER = "x-policyc-jwt-payload"
# One service per claim test, each allowing when its test holds: (path, test, the interpreter's).
CLAIM_TESTS = {
    "eq": (("a",), f"eq 2 {x('v')} {x('')}", lambda v: compare_string(Op.IN, v, ("v", ""))),
    "prefix": (("a",), f"prefix {x('v')}", lambda v: compare_string(Op.PREFIX, v, ("v",))),
    "suffix": (("a",), f"suffix {x('é')}", lambda v: compare_string(Op.SUFFIX, v, ("é",))),
    "contains": (("a",), f"contains 1 {x('v')}", lambda v: compare_string(Op.CONTAINS, v, ("v",))),
    "true": (("a",), "true", lambda v: v is True),
    "false": (("a",), "false", lambda v: v is False),
    "nested": (("a", "b"), f"eq 1 {x('v')}", lambda v: compare_string(Op.EQ, v, ("v",))),
}
CLAIMS = index_config(
    *(section(name, [f"allow x61 claim {len(path)} {' '.join(map(x, path))} {test}"])
      for name, (path, test, _) in CLAIM_TESTS.items()),
    section("token", ["allow x61 token"]),
    section("header", [f"allow x61 header {x('x-h')} claim 1 {x('a')}"]))


def payload(data: bytes) -> str:
    """The forwarded payload header: base64url without padding, as a token carries it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def expected_claims(data: bytes) -> list[tuple[str, str | None, int]]:
    """What the interpreter decides for a verified token of this payload, per CLAIMS section."""
    claims = tokenjson.loads(data)
    decided = []
    for name in [*CLAIM_TESTS, "token", "header"]:
        if claims is None:
            decided.append(("error", None, 403))
            continue
        if name == "token":
            holds = True
        elif name == "header":
            holds = claim_value(claims, ("a",)) == "h"
        else:
            path, _, test = CLAIM_TESTS[name]
            holds = test(claim_value(claims, path))
        decided.append(("allow", "a", 200) if holds else ("default-deny", None, 403))
    return decided


def claim_requests(header: str | None, extra=()) -> list[Request]:
    headers = [(PAYLOAD_HEADER, header)] if header is not None else []
    return [get("/", name, headers=[*headers, ("x-h", "h"), *extra]) for name in [*CLAIM_TESTS, "token", "header"]]


def test_rules_reading_a_token_are_an_error_behind_a_chain_without_jwt_authn(driver, tmp_path):
    """On a hot reload the listener and the routes may come from two policies: a section whose
    rules read a token, behind a listener whose chain has no jwt_authn (none verifies a token, and
    a client's own payload header would reach the filter), is decided `error` even for a payload
    header that says what its rules ask; a section that reads none is decided as ever."""
    sections = (section("shop", [f"allow {x('admins')} claim 1 {x('role')} eq 1 {x('admin')}"]),
                section("lab", [f"allow {x('open')} path eq 1 {x('/')}"]))
    requests = [get("/", headers=[(PAYLOAD_HEADER, payload(b'{"role":"admin"}'))]), get("/", service="lab")]
    assert decide(driver, tmp_path, index_config(*sections, chain=None), requests) == [
        ("error", None, 403), ("allow", "open", 200)]
    assert decide(driver, tmp_path, index_config(*sections, chain="rbac-allow"), requests) == [
        ("error", None, 403), ("allow", "open", 200)]
    assert decide(driver, tmp_path, index_config(*sections), requests) == [("allow", "admins", 200),
                                                                          ("allow", "open", 200)]


def decide_payloads(driver: Path, tmp_path: Path, payloads: list[bytes]) -> list[list]:
    """Each payload's decisions over the CLAIMS sections, as the filter makes them."""
    requests = [request for data in payloads for request in claim_requests(payload(data))]
    decided = decide(driver, tmp_path, CLAIMS, requests)
    size = len(CLAIM_TESTS) + 2
    return [decided[i:i + size] for i in range(0, len(decided), size)]


CLAIM_PAYLOADS = [
    b'{"a": "v"}', b'{"a": ""}', '{"a": "vé"}'.encode(), '{"a": "é"}'.encode(), b'{"a": "w"}', b'{"a": "V"}',
    b'{"a": "h"}',
    b'{"a": ["x", "v"]}', b'{"a": ["x", ["v"]]}', b'{"a": [null, 1, "v"]}', b'{"a": []}', b'{"a": {"v": 1}}',
    b'{"a": true}', b'{"a": false}', b'{"a": 1}', b'{"a": 0}', b'{"a": null}', b'{"a": "true"}',
    b'{"a": 1.0}',
    b'{"a": {"b": "v"}}', b'{"a": {"b": ["v"]}}', b'{"a": {"b": "v", "c": "w"}}', b'{"a.b": "v"}', b'{}', b"null",
    b' \t\r\n{"a":"v"}\n ', b"{'a': 'v'}", b'{a: "v"}', b'{_a1: 1, a: "v"}', b'{"a": "v",}', b'{"a": ["v",]}',
    b'{"a": "\\u0076"}', b'{"a": "\\U0076"}', b'{"a": "\\\'v"}', b'{"a": "v\\u00e9"}', b'{"a": "\\ud83d\\ude00"}',
    b'{"a": "\\ud83d \\ude00"}', b'{"a": "\\ud83d\\Ude00"}', b'{"a": "\\ud800"}', b'{"a": "\\udc00"}',
    b'{"a": "raw\x01\x1f"}', b'{"a": "\\u0000"}', b'{"a": "\\q"}', b'{"a": "v}', b'{"a": "v"', b'{"a" "v"}',
    b'{"a": "v",,}', b'{,}', b'{"a": "v"} x', b'{"a": "v"}{}', b'["v"]', b'"v"', b"nul", b"null x", b"",
    b'{"a": 1e400}', b'{"a": -1e400}', b'{"a": 1e-400}', b'{"a": 01}', b'{"a": 1.}', b'{"a": .5}', b'{"a": -}',
    b'{"a": +1}', b'{"a": 1e}', b'{"a": 1E+2}', b'{"a": NaN}', b'{"a": Infinity}', b'{"a": tru}', b'{"a": truex}',
    b'{true: 1}', b'{null: 1}', b'{1a: 1}', b'{"a": "v", "a": "w"}', b'{"b": {"c": 1, "c": 2}, "a": "v"}',
    b'{"a": "v", "A": "w"}', b'{"a": "\xc3\xa9"}', b'{"a": "\xc3"}', b'{"a": "\xed\xa0\x80"}', b'{"a": "\xc0\xaf"}',
    b'{"a": "\xf4\x90\x80\x80"}', b'{"a": "\xf0\x9f\x98\x80"}', b'{"a": "\xff"}', b'{/*c*/"a": "v"}',
    b'{"a": ["v"], "b": [[[]]]}', b'{"a": {"b": {"b": "v"}}}',
    # Finite as a double or not, by the digits before the point alone (10^308 < DBL_MAX < 10^309).
    b'{"a": "v", "n": ' + b"9" * 308 + b".9}", b'{"a": "v", "n": -1' + b"0" * 308 + b"}",
    b'{"a": "v", "n": ' + b"9" * 309 + b"}", b'{"a": "v", "n": -' + b"9" * 309 + b".0}",
    # Objects past the few keys compared pair by pair, with and without a repeated key.
    b"{" + b", ".join(b'"k%d": %d' % (i, i) for i in range(17)) + b', "a": "v"}',
    b"{" + b", ".join(b'"k%d": %d' % (i, i) for i in range(17)) + b', "a": "v", "k3": 0}',
]


def test_claims_decide_as_the_interpreter(driver, tmp_path):
    """Each payload, valid or not as tokenjson reads it, decided over every claim test as the
    interpreter decides it (an invalid one, which jwt_authn refuses first, is an error)."""
    for data, decided in zip(CLAIM_PAYLOADS, decide_payloads(driver, tmp_path, CLAIM_PAYLOADS), strict=True):
        assert decided == expected_claims(data), data


def test_json_cases_of_the_corpus_decide_as_the_interpreter(driver, tmp_path):
    """The payload texts of tests/cases/tokens/json.cases.yaml, the edges Envoy was observed on."""
    cases = load_case_file(str(Path(__file__).parents[1] / "cases" / "tokens" / "json.cases.yaml")).cases
    texts = [case.request["token"]["payload_text"] for case in cases if "payload_text" in case.request.get("token", {})]
    payloads = [text.replace("$claims", '"a": "v"').encode("utf-8", "surrogateescape") for text in texts]
    assert len(payloads) > 50
    for data, decided in zip(payloads, decide_payloads(driver, tmp_path, payloads), strict=True):
        assert decided == expected_claims(data), data


def test_mutated_payloads_decide_as_the_interpreter(driver, tmp_path):
    seeds = [b'{"a": ["x", "v"], \'b\': {c: [1.5e3, true, null, "\\u00e9\\ud83d\\ude00"]},}',
             b'{"a": {"b": "v"}, "z": [{"y": -0.1E-2}], "w": "\\\'\\"\\\\\\/\\b\\f\\n\\r\\t"}']
    payloads = [data for seed, n in zip(seeds, (1, 2), strict=True) for data in mutants(seed, 1500, n)]
    decided = decide_payloads(driver, tmp_path, payloads)
    assert sum(tokenjson.loads(data) is not None for data in payloads) > 100  # not only refusals
    for data, each in zip(payloads, decided, strict=True):
        assert each == expected_claims(data), data


TWO_PADS, ONE_PAD = payload(b'{"a": "v"}'), payload(b'{"a": "v"} ')  # 10 and 11 bytes


@pytest.mark.parametrize(("header", "error"), [
    (TWO_PADS.replace("J", " J", 3) + "\t", False),  # whitespace inside, which absl skips
    (TWO_PADS + "==", False),  # padding optional, but exact
    (TWO_PADS + "=", True),
    (ONE_PAD + "=", False),
    (ONE_PAD + "==", True),
    (ONE_PAD + "=====", False),  # the whole a multiple of 4, as absl allows
    (TWO_PADS + " = =\n", False),
    (TWO_PADS[:-2] + "=" + TWO_PADS[-2:], True),  # padding inside
    (TWO_PADS + "AAA", True),  # one digit alone at the end
    (TWO_PADS.replace("e", "+", 1), True),  # base64, not base64url
    ("", True),
])
def test_the_payload_is_base64url_as_absl_reads_it(driver, tmp_path, header, error):
    data = tokens._b64url(header)  # the interpreter's reading, the reference
    assert (data is None or tokenjson.loads(data) is None) is error
    decided = decide(driver, tmp_path, CLAIMS, claim_requests(header))
    assert (decided[0][0] == "error") is error, header


def test_no_payload_header_is_no_token_and_two_are_an_error(driver, tmp_path):
    none = decide(driver, tmp_path, CLAIMS, claim_requests(None))
    assert {decision for decision, _, _ in none} == {"default-deny"}
    good = payload(b'{"a": "v"}')
    twice = decide(driver, tmp_path, CLAIMS, claim_requests(good, [(PAYLOAD_HEADER, good)]))
    assert {decision for decision, _, _ in twice} == {"error"}


def test_huge_and_deep_payloads_are_errors_without_a_finding(driver, tmp_path):
    member = b'"k%d": "%s", '
    big = b"{" + b"".join(member % (i, b"v" * 100) for i in range(5000)) + b'"a": "v"}'
    deep = {depth: b'{"a": ' * (depth - 1) + b"{}" + b"}" * (depth - 1) for depth in (100, 101)}
    lists = {depth: b'{"a": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}" for depth in (100, 101)}
    payloads = [big, deep[100], deep[101], lists[100], lists[101], b'{"a": ' + b"[" * 200000,
                b"{" + b'"a": 1, ' * 100000 + b'"b": 1}', b'{"a": "' + b"\\u00e9" * 100000 + b'"}']
    decided = decide_payloads(driver, tmp_path, payloads)
    assert [each[-2][0] for each in decided] == [  # the `token` section: the payload read or an error
        "allow", "allow", "error", "allow", "error", "error", "error", "allow"]
    assert [each[-2][0] for each in decide_payloads(driver, tmp_path, [b'{"a": "' + b"v" * 790000 + b'"}'])] == [
        "error"]  # past CLAIMS_MAX_TEXT once encoded


# ---------------------------------------------------------------- the client certificate

PEER = index_config(section("peer", [
    "allow x74 and 2 path eq 1 x2f74 peer trusted",  # /t
    f"allow x65 and 2 path eq 1 x2f65 peer subject eq 2 {x('CN=a,O=b')} {x('')}",  # /e
    f"allow x70 and 2 path eq 1 x2f70 peer subject prefix {x('CN=a')}",  # /p
    f"allow x73 and 2 path eq 1 x2f73 peer subject suffix {x(',O=b')}",  # /s
    "allow x6e and 2 path eq 1 x2f6e not peer trusted",  # /n
]))


@pytest.mark.parametrize(("certificate", "allowed"), [
    ([(":mtls", "true"), (":subject", "CN=a,O=b")], {"/t", "/e", "/p", "/s"}),
    ([(":mtls", "true"), (":subject", "CN=a")], {"/t", "/p"}),
    ([(":mtls", "true"), (":subject", "")], {"/t", "/e"}),  # an empty subject is one
    ([(":mtls", "true"), (":subject", "cn=a,O=b ")], {"/t"}),
    ([(":mtls", "false"), (":subject", "CN=a,O=b")], {"/n"}),  # presented, or the subject is not read
    ([(":subject", "CN=a,O=b")], {"/n"}),  # no TLS: the attribute has no value
    ([], {"/n"}),
])
def test_the_client_certificate(driver, tmp_path, certificate, allowed):
    paths = ["/t", "/e", "/p", "/s", "/n"]
    decided = decide(driver, tmp_path, PEER, [get(path, "peer", headers=certificate) for path in paths])
    assert {path for path, (decision, _, _) in zip(paths, decided, strict=True) if decision == "allow"} == allowed


def test_a_certificate_whose_subject_cannot_be_read_is_an_error(driver, tmp_path):
    decided = decide(driver, tmp_path, PEER, [get(path, "peer", headers=[(":mtls", "true")]) for path in ("/t", "/n")])
    assert [decision for decision, _, _ in decided] == ["error", "error"]


SANS = index_config(section("sans", [
    f"allow x75 and 2 path eq 1 x2f75 peer uri eq 2 {x('spiffe://a/x')} {x('')}",  # /u
    f"allow x70 and 2 path eq 1 x2f70 peer uri prefix {x('spiffe://b/')}",  # /p
    f"allow x73 and 2 path eq 1 x2f73 peer uri suffix {x('/z')}",  # /s
    f"allow x64 and 2 path eq 1 x2f64 peer dns eq 1 {x('b.example')}",  # /d
    f"allow x71 and 2 path eq 1 x2f71 peer dns prefix {x('*.')}",  # /q
    f"allow x72 and 2 path eq 1 x2f72 peer dns suffix {x('.test')}",  # /r
    f"allow x6e and 2 path eq 1 x2f6e not peer uri prefix {x('')}",  # /n: no URI SAN
]))
SAN_PATHS = ["/u", "/p", "/s", "/d", "/q", "/r", "/n"]
CERTIFICATE = [(":mtls", "true"), (":subject", "CN=a")]


def decide_sans(driver, tmp_path, headers_of: list[list[tuple[str, str]]]) -> list[set[str]]:
    """For each certificate (as driver headers), the paths of SANS it is allowed; `error` when any
    of its requests is decided so."""
    requests = [get(path, "sans", headers=headers) for headers in headers_of for path in SAN_PATHS]
    decided = iter(decide(driver, tmp_path, SANS, requests))
    allowed = []
    for _ in headers_of:
        decisions = {path: next(decided)[0] for path in SAN_PATHS}
        allowed.append({"error"} if "error" in decisions.values() else
                       {path for path, decision in decisions.items() if decision == "allow"})
    return allowed


def sans_of(uris: list[str], dns: list[str]) -> list[tuple[str, str]]:
    return [*CERTIFICATE, *((":uri", uri) for uri in uris), *((":dns", name) for name in dns)]


@pytest.mark.parametrize(("uris", "dns", "allowed"), [
    (["spiffe://a/x"], [], {"/u"}),
    (["spiffe://c/1", "spiffe://c/2", "spiffe://a/x"], [], {"/u"}),  # the third SAN
    (["spiffe://c/1", "spiffe://b/2"], ["a.example", "b.example"], {"/p", "/d"}),  # the second of each
    (["spiffe://c/z", "spiffe://a/x", "spiffe://b/"], ["x.test", "*.example", "b.example"], set(SAN_PATHS) - {"/n"}),
    ([""], ["*."], {"/u", "/q"}),  # an empty SAN is one
    ([], [], {"/n"}),
    ([], ["b.example"], {"/d", "/n"}),
    (["spiffe://a/x\0/z", "spiffe://a/x\n"], ["b.example\0", "\xff.test"], {"/s", "/r"}),  # any byte
    (["spiffe://a/X", "Spiffe://b/", "spiffe://a/x "], ["B.example", "b.example."], set()),  # bytes, exactly
])
def test_every_san_of_the_certificate_is_tested(driver, tmp_path, uris, dns, allowed):
    assert decide_sans(driver, tmp_path, [sans_of(uris, dns)]) == [allowed]


def test_without_a_certificate_the_sans_are_not_read(driver, tmp_path):
    """No certificate: SAN atoms are false, and neither a record nor its absence matters."""
    headers = [[], [(":mtls", "false"), (":uri", "spiffe://a/x")], [(":sans-fail", "")], [(":record", "junk")]]
    assert decide_sans(driver, tmp_path, headers) == [{"/n"}] * 4


def record(uris: list[bytes], dns: list[bytes]) -> bytes:
    """The record of native_runtime/peer_sans.h."""
    def listed(sans):
        return len(sans).to_bytes(4, "big") + b"".join(len(s).to_bytes(4, "big") + s for s in sans)
    return listed(uris) + listed(dns)


GOOD_RECORD = record([b"spiffe://a/x"], [b"b.example"])
BAD_RECORDS = {
    "empty": b"",
    "one list": record([b"spiffe://a/x"], [])[:-4],
    "a short count": GOOD_RECORD[:2],
    "a count past the end": (9).to_bytes(4, "big") + GOOD_RECORD[4:],
    "a length past the end": GOOD_RECORD[:4] + (999).to_bytes(4, "big") + GOOD_RECORD[8:],
    "a huge length": GOOD_RECORD[:4] + (2**32 - 1).to_bytes(4, "big") + GOOD_RECORD[8:],
    "a huge count": (2**32 - 1).to_bytes(4, "big") + GOOD_RECORD[4:],
    "truncated": GOOD_RECORD[:-1],
    "a byte left over": GOOD_RECORD + b"\0",
    "a third list": GOOD_RECORD + (0).to_bytes(4, "big"),
    "text": b"spiffe://a/x,b.example",
}


def test_a_record_is_read_only_if_it_is_exactly_one(driver, tmp_path):
    """The policy filter's reading of the record the network filter leaves on the connection: the
    record of that certificate decides as its SANs; a certificate whose record is missing (the SANs
    could not be read) or not exactly a record is the decision `error`."""
    given = [[*CERTIFICATE, (":record", value)] for value in [GOOD_RECORD, *BAD_RECORDS.values()]]
    headers = [*given, [*CERTIFICATE, (":uri", "spiffe://a/x"), (":sans-fail", "")]]
    assert decide_sans(driver, tmp_path, headers) == [{"/u", "/d"}, *[{"error"}] * (len(BAD_RECORDS) + 1)]


def read_record(data: bytes) -> tuple[list[bytes], list[bytes]] | None:
    """The URI and DNS SANs of a record, or None when it is not exactly one."""
    lists, at = [], 0
    for _ in range(2):
        if at + 4 > len(data):
            return None
        count, at, sans = int.from_bytes(data[at:at + 4], "big"), at + 4, []
        for _ in range(count):
            length = int.from_bytes(data[at:at + 4], "big")
            if at + 4 > len(data) or at + 4 + length > len(data):
                return None
            sans.append(data[at + 4:at + 4 + length])
            at += 4 + length
        lists.append(sans)
    return (lists[0], lists[1]) if at == len(data) else None


def sans_allowed(uris: list[bytes], dns: list[bytes]) -> set[str]:
    """The paths of SANS that a certificate with these SANs is allowed, by the rules' own tests."""
    tests = {"/u": (uris, lambda v: v in (b"spiffe://a/x", b"")), "/p": (uris, lambda v: v.startswith(b"spiffe://b/")),
             "/s": (uris, lambda v: v.endswith(b"/z")), "/d": (dns, lambda v: v == b"b.example"),
             "/q": (dns, lambda v: v.startswith(b"*.")), "/r": (dns, lambda v: v.endswith(b".test")),
             "/n": (uris, lambda v: False)}
    allowed = {path for path, (sans, test) in tests.items() if any(map(test, sans))}
    return allowed | ({"/n"} if not uris else set())


def test_mutated_records_decide_as_their_sans(driver, tmp_path):
    """Random bytes changed in good records, and records cut short: each decides as the SANs it then
    holds, or is an error when it is no longer exactly a record."""
    rng = random.Random(5)
    records = []
    for _ in range(500):
        data = bytearray(record([b"spiffe://a/x", b"spiffe://b/"], [b"b.example", b"x.test"]))
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.choice([0, 1, 0xff, rng.randrange(256)])
        records.append(bytes(data[:rng.randint(0, len(data))] if rng.random() < 0.3 else data))
    results = decide_sans(driver, tmp_path, [[*CERTIFICATE, (":record", data)] for data in records])
    expected = [{"error"} if (read := read_record(data)) is None else sans_allowed(*read) for data in records]
    assert results == expected
    assert {"error"} in results and any(result != {"error"} for result in results)
