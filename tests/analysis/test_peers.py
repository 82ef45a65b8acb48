"""Client certificates in the analysis: SANs and subjects are found, untrusted certificates end
the handshake, and anonymous means neither a token nor a certificate. Every example request is
replayed through the interpreter with a certificate from a made-up CA standing for the real one."""

import pytest

from policyc.analysis import analyze, diff, who_can
from policyc.credentials import certs as devcerts
from tests.analysis.policies import peer_policy

DEPLOY = '    allow "deploy" when peer.uri == "spiffe://example.org/ns/ci/sa/deploy" and method == POST\n'
OPEN = '    allow public "open" when path == "/x"\n'
CI_WIDE = '    allow "deploy" when peer.uri prefix "spiffe://example.org/ns/ci/" and method == POST\n'


@pytest.fixture(scope="module")
def ca():
    return devcerts.make_ca("mesh CA")


def test_widening_a_san_test_shows_a_certificate_newly_allowed(tmp_path, ca):
    old, new = peer_policy(tmp_path / "old", DEPLOY, ca), peer_policy(tmp_path / "new", CI_WIDE, ca)
    (service,) = diff(old, new).services
    assert service.verdict == "broader" and service.changes
    for change in service.changes:
        certificate = change.request["certificate"]
        assert certificate["issued by"] == "the CA of trust mesh"
        uris = certificate["uri"]
        assert any(u.startswith("spiffe://example.org/ns/ci/") for u in uris)
        assert "spiffe://example.org/ns/ci/sa/deploy" not in uris
        assert change.new.rule == "deploy"


def test_trusting_another_ca_refuses_the_handshake_to_the_old_ones_certificates(tmp_path, ca):
    old = peer_policy(tmp_path / "old", DEPLOY + OPEN, ca)
    new = peer_policy(tmp_path / "new", DEPLOY + OPEN, devcerts.make_ca("another CA"))
    (service,) = diff(old, new).services
    assert service.verdict == "mixed"
    lost = [c for c in service.changes if c.access == "loses"]
    assert lost and all(c.new.status == 0 and c.new.reason == "handshake-refused" for c in lost)
    assert {c.old.rule for c in lost} == {"deploy", "open"}
    assert all(c.request["certificate"]["issued by"] == "the CA of trust mesh" for c in lost)


def test_a_certificate_from_an_unknown_ca_never_reaches_the_rules(tmp_path, ca):
    checked = peer_policy(tmp_path / "p", '    allow "any-peer" when peer trusted\n' + OPEN, ca)
    unmarked = peer_policy(tmp_path / "q", '    allow "any-peer" when peer trusted\n' + OPEN.replace(" public", ""), ca)
    # `open` admits anonymous callers: a finding only where it is not marked `public`.
    assert {(f.rule, f.kind) for f in analyze(unmarked)} == {("open", "anonymous")}
    assert not analyze(checked)
    assert who_can(checked, "api", "GET", "/x").anonymous == "always"
    assert who_can(checked, "api", "GET", "/y").anonymous == "never"
    assert who_can(checked, "api", "GET", "/y").certificates == {"mesh": "always"}


def test_impossible_certificate_tests_never_match(tmp_path, ca):
    rules = ('    allow "two-subjects" when peer.subject == "CN=a" and peer.subject == "CN=b"\n'
             '    allow "two-sans" when peer.dns == "a.example.org" and peer.dns == "b.example.org"\n'
             '    allow "odd-subject" when peer.subject prefix "O=Acme"\n')
    found = {f.rule: f.kind for f in analyze(peer_policy(tmp_path / "p", rules, ca))}
    # A certificate holds one subject but may list two DNS names.
    assert found["two-subjects"] == "never-matches"
    assert "two-sans" not in found
    assert found["odd-subject"] == "not-analysed"
