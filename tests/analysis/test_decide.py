"""`analysis.decide`: one concrete request decided by the solver. The decision corpus runs it on
every case (test_cases_analysis.py); these are its edges: a wrong audience, a dry-run service, a
host no service serves, an IPv4-mapped peer, many values of one header, and what it refuses."""

import pytest

from policyc.analysis import decide
from policyc.analysis.decide import Request, Token, Verdict
from tests.analysis.policies import API, checked

POLICY = API + """
service edge {
    hosts ["edge.internal"]
    upstream "127.0.0.1:8081"
    mode dry-run
    allow public "office" when source in "10.0.0.0/8"
    allow public "tagged" when header "x-tag" prefix "t" and header "x-tag" == "blue"
    allow public "five" when header "x-n" == "1" and header "x-n" == "2" and header "x-n" == "3"
        and header "x-n" == "4" and header "x-n" == "5"
}
"""


@pytest.fixture(scope="module")
def policies(tmp_path_factory):
    return checked(tmp_path_factory.mktemp("decide"), POLICY)


def test_tokens_and_rules(policies):
    deploy = Request("api", "POST", "/deploy", token=Token("ci", {"roles": ["deployer"]}))
    assert decide(policies, deploy) == Verdict(200, "allow", "deploy", True)
    assert decide(policies, Request("api", "POST", "/deploy")) == Verdict(403, "default-deny", None, False)
    read = Request("api", "GET", "/api/v1/x", token=Token("idp", {"aud": "https://api/"}))
    assert decide(policies, read) == Verdict(200, "allow", "read", True)
    wrong = Request("api", "GET", "/admin/x", token=Token("idp", {"aud": "other"}))
    assert decide(policies, wrong) == Verdict(403, "forbidden", None, False)  # before the deny rule
    assert decide(policies, Request(None, "GET", "/")) == Verdict(404, "no-service", None, False)


def test_dry_run_sources_and_header_values(policies):
    assert decide(policies, Request("edge", "GET", "/", source="::ffff:10.1.2.3")) == \
        Verdict(200, "allow", "office", True)
    # A dry-run service lets the request through whatever it decides.
    assert decide(policies, Request("edge", "GET", "/", source="::1")) == Verdict(403, "default-deny", None, True)
    many = {"x-tag": ("a", "b", "c", "tx", "d", "blue")}
    assert decide(policies, Request("edge", "GET", "/", many, "::1")).rule == "tagged"


@pytest.mark.parametrize(("request_", "why"), [
    (Request("edge", "GET", "/", {"x-n": ("1", "2", "3", "4", "5")}), "at most 4 values of header 'x-n'"),
    (Request("api", "GET", "/", token=Token("idp", {"aud": ["api", "x"]})), "`aud` is analysed as one string"),
    (Request("api", "GET", "/", token=Token("idp", {"exp": 1})), "`exp` is set by the token check"),
    (Request("api", "FETCH", "/"), "method 'FETCH' never reaches a rule"),
    (Request("nope", "GET", "/"), "no service is named 'nope'"),
])
def test_requests_outside_the_bounds_are_refused(policies, request_, why):
    with pytest.raises(ValueError, match=why):
        decide(policies, request_)
