"""glob.py, net.py and hosts.py without Envoy (their Envoy checks are in
tests/envoy/test_paths_envoy.py: globs as RE2 routes, hosts as virtual hosts)."""

import ipaddress
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policyc.semantics.glob import glob_error, glob_matches, glob_to_regex
from policyc.semantics.hosts import Admitted, admit_request, host_header, match_host
from policyc.semantics.net import address_in, cidr_error, parse_cidr
from policyc.semantics.paths import Rejected, Target

# ---------------------------------------------------------------- glob

MATCHES = [
    ("/api/*/items/**", ["/api/v1/items", "/api/v1/items/", "/api/v1/items/3/x", "/api//items"]),
    ("/reports/*.csv", ["/reports/a.csv", "/reports/.csv"]),
    ("/v*/x", ["/v/x", "/v1/x", "/version/x"]),
    ("/a/**", ["/a", "/a/", "/a/b/c"]),
    ("/**", ["/", "/a", "//", "/a/b/"]),
    ("/a/**/b", ["/a/b", "/a/x/b", "/a/x/y/b"]),
    ("/a/*", ["/a/", "/a/x"]),
    ("/x*y*z", ["/xyz", "/xAyBz", "/xyyzz"]),
    ("/a.b/(c)/[d]/+$", ["/a.b/(c)/[d]/+$"]),
]
NOT_MATCHES = [
    ("/api/*/items/**", ["/api/items", "/api/v1/v2/items", "/api/v1/itemsx", "/API/v1/items"]),
    ("/reports/*.csv", ["/reports/a/b.csv", "/reports/a.csvx", "/reports"]),
    ("/v*/x", ["/x", "/v1/y/x"]),
    ("/a/**", ["/ab", "/b/a", "/"]),
    ("/a/**/b", ["/a/bb", "/a/x/c"]),
    ("/a/*", ["/a", "/a/x/y"]),
    ("/a.b", ["/aXb"]),  # '.' is literal, not a regex dot
]


@pytest.mark.parametrize(("pattern", "paths"), MATCHES)
def test_glob_matches(pattern, paths):
    assert [p for p in paths if not glob_matches(pattern, p)] == []


@pytest.mark.parametrize(("pattern", "paths"), NOT_MATCHES)
def test_glob_does_not_match(pattern, paths):
    assert [p for p in paths if glob_matches(pattern, p)] == []


@pytest.mark.parametrize(("pattern", "problem"), [
    ("", "empty"),
    ("a/b", "start with `/`"),
    ("*/a", "start with `/`"),
    ("/a/**b", "`**` inside a segment"),
    ("/a**/b", "`**` inside a segment"),
    ("/***", "`**` inside a segment"),
    ("/a/./b", "`.` or `..` segment"),
    ("/a/..", "`.` or `..` segment"),
    ("/a//b", "empty segment"),
    ("//", "empty segment"),
    ("/a?b", "never seen"),
    ("/a#b", "never seen"),
    ("/a\\b", "never seen"),
    ("/a b", "never seen"),
    ("/a|b", "never seen"),
    ("/é", "never seen"),
])
def test_glob_error(pattern, problem):
    assert problem in (glob_error(pattern) or "")


@pytest.mark.parametrize("pattern", ["/", "/**", "/a/**", "/a/", "/*", "/a/*/", "/reports/*.csv",
                                     "/a;b/*", "/%41", "/**/x/**", "/a.b/(c)/[d]/+$"])
def test_glob_well_formed(pattern):
    assert glob_error(pattern) is None


def test_glob_functions_refuse_a_pattern_without_leading_slash():
    with pytest.raises(ValueError):
        glob_matches("a/*", "a/b")
    with pytest.raises(ValueError):
        glob_to_regex("a/*")


def test_glob_matching_takes_no_exponential_time():
    started = time.perf_counter()
    assert not glob_matches("/" + "*a" * 40 + "*b", "/" + "a" * 4000)
    assert not glob_matches("/**/a" * 30 + "/b", "/a" * 2000)
    assert glob_matches("/**/a" * 30 + "/b", "/a" * 2000 + "/b")
    assert time.perf_counter() - started < 2


GLOB_PIECES = ["a", "b", "ab", ".", "x.y", "(", ")", "[", "]", "+", "$", "^", "{", "}", "|", "\\",
               "?", "-", "%", "~", "é", "\n"]
segment_patterns = st.one_of(
    st.just("**"),
    st.lists(st.sampled_from(GLOB_PIECES + ["*"]), max_size=4).map("".join),
)
glob_patterns = st.lists(segment_patterns, min_size=1, max_size=5).map(lambda s: "/" + "/".join(s))


@st.composite
def pattern_and_path(draw):
    pattern = draw(glob_patterns)
    literals = [piece for piece in re.split(r"[/*]+", pattern) if piece]
    pieces = st.sampled_from(literals + ["/", "/", "x", "*", ""]) if literals else st.sampled_from(
        ["/", "x", ""])
    return pattern, "/" + "".join(draw(st.lists(pieces, max_size=8)))


@settings(derandomize=True, deadline=None, max_examples=1500)
@given(pattern_and_path())
def test_glob_to_regex_means_what_glob_matches_means(case):
    pattern, path = case
    assert glob_matches(pattern, path) == bool(re.fullmatch(glob_to_regex(pattern), path))


# ---------------------------------------------------------------- net


@pytest.mark.parametrize(("text", "network"), [
    ("10.0.0.0/8", "10.0.0.0/8"),
    ("0.0.0.0/0", "0.0.0.0/0"),
    ("10.1.2.3/32", "10.1.2.3/32"),
    ("::1/128", "::1/128"),
    ("::/0", "::/0"),
    ("2001:DB8::/32", "2001:db8::/32"),
    ("0010::/16", "10::/16"),  # IPv6 groups may be zero-padded: hex, no ambiguity
])
def test_parse_cidr(text, network):
    assert parse_cidr(text) == ipaddress.ip_network(network)


@pytest.mark.parametrize(("text", "problem"), [
    ("10.0.0.1/8", "host bits set; the range it covers is `10.0.0.0/8`"),
    ("10.0.0.0", "needs a prefix length"),
    ("010.0.0.0/8", "leading zeros"),
    ("10.0.0.0/08", "not `address/length`"),
    ("10.0.0.0/+8", "not `address/length`"),
    ("10.0.0.0/33", "longer than 32"),
    ("::1/129", "longer than 128"),
    ("10.0.0.0/255.0.0.0", "not `address/length`"),
    ("fe80::1%eth0/64", "not `address/length`"),
    (" 10.0.0.0/8", "not `address/length`"),
    ("1.2.3/24", "not an IPv4 or IPv6 address"),
    ("::ffff:10.0.0.0/104", "IPv4-mapped IPv6, which never matches"),
    ("", "needs a prefix length"),
])
def test_cidr_error(text, problem):
    assert problem in (cidr_error(text) or "")
    assert parse_cidr(text) is None


@pytest.mark.parametrize(("address", "cidrs", "inside"), [
    ("10.1.2.3", ["10.0.0.0/8"], True),
    ("11.1.2.3", ["10.0.0.0/8", "192.168.0.0/16"], False),
    ("192.168.4.5", ["10.0.0.0/8", "192.168.0.0/16"], True),
    ("::1", ["::1/128"], True),
    ("::ffff:10.1.2.3", ["10.0.0.0/8"], True),  # Envoy unmaps dual-stack peers (unverified)
    ("::ffff:10.1.2.3", ["::/0"], False),  # ... and then they are IPv4: versions never cross
    ("10.1.2.3", ["::/0"], False),
    ("127.0.0.1", [], False),
])
def test_address_in(address, cidrs, inside):
    assert address_in(address, cidrs) is inside


def test_address_in_refuses_what_the_checker_refuses():
    with pytest.raises(ValueError):
        address_in("10.1.2.3", ["10.0.0.1/8"])
    with pytest.raises(ValueError):
        address_in("not-an-ip", ["10.0.0.0/8"])


# ---------------------------------------------------------------- hosts

HOSTS = {"payments": ("payments.internal", "payments.internal:8443"), "orders": ("Orders.Example",)}


@pytest.mark.parametrize(("values", "authority"), [
    ([], None),
    ([""], ""),
    ([" payments.internal\t"], "payments.internal"),
    (["a", "a"], "a,a"),
    (["", "a"], "a"),
    (["a", ""], "a"),
    (["", "", "b"], "b"),
])
def test_host_header(values, authority):
    assert host_header(values) == authority


@pytest.mark.parametrize(("authority", "service"), [
    ("payments.internal", "payments"),
    ("PAYMENTS.Internal:8443", "payments"),
    ("orders.example", "orders"),
    ("payments.internal.", None),
    ("payments.internal:80", None),
    ("payments.internal:08443", None),
    ("payments.internal:", None),
    ("u@payments.internal", None),
    ("payments.internal,payments.internal", None),
    ("", None),
    ("PAYMENTS.İNTERNAL", None),  # only ASCII letters fold
])
def test_match_host(authority, service):
    assert match_host(authority, HOSTS) == service


@pytest.mark.parametrize(("method", "target", "hosts", "outcome"), [
    ("OPTIONS", "*", [], Rejected(400, "missing_host_header")),  # before the 404 of "*"
    ("OPTIONS", "*", ["a b"], Rejected(400, "http.invalid_authority")),
    ("OPTIONS", "*", ["payments.internal"], Rejected(404, "absolute_path_rejected")),
    ("GET", "/a%2F", ["nowhere"], Rejected(400, "path_normalization_failed")),  # before routing
    ("GET", "/a\x01", [], Rejected(400, "http1.invalid_characters")),  # the codec comes first
    ("GET", "/a\n", [], Rejected(426, "low_version")),
    ("GET", "/x", ["payments.internal/x"], Rejected(400, "http.invalid_authority")),
    ("GET", "/x", ["paymentş.internal"], Rejected(400, "http.invalid_authority")),
    ("GET", "/x", [""], Admitted(Target("/x", None), "", None)),
    ("GET", "/a/../x?q", ["PAYMENTS.internal"],
     Admitted(Target("/x", "q"), "PAYMENTS.internal", "payments")),
    ("GET", "http://payments.internal:8443/x", ["a b"],  # the URL's authority replaces Host
     Admitted(Target("/x", None, "payments.internal:8443"), "payments.internal:8443", "payments")),
    ("GET", "http://h?x", [], Rejected(404, "absolute_path_rejected")),
])
def test_admit_request(method, target, hosts, outcome):
    assert admit_request(method, target, hosts, HOSTS) == outcome
