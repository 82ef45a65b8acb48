"""The interpreter's verified peer: which client certificates verify, which fail the handshake, and
what a verified one shows to peer atoms. The same cases against a real Envoy are in
tests/differential/test_peer_differential.py."""

import datetime
import time

import pytest

from policyc.credentials import certs as devcerts
from policyc.semantics.peer import ClientCertificate, HandshakeRefused, Peer, verified_peer

NOW = time.time()
TODAY = datetime.datetime.now(datetime.UTC)
MESH = devcerts.make_ca("mesh")
PARTNERS = devcerts.make_ca("partners")
TRUSTS = {"mesh": (MESH.certificate,), "partners": (PARTNERS.certificate,)}


def presented(issued: devcerts.Issued, *intermediates: devcerts.Issued) -> ClientCertificate:
    return ClientCertificate(issued.cert_pem + "".join(i.cert_pem for i in intermediates), issued.key_pem)


def test_a_verified_certificate_shows_its_sans_subject_and_trust():
    bot = devcerts.issue(MESH, "deploy-bot", uris=["spiffe://example.org/bot", "https://x.test/a"],
                         dns=["bot.example.org", "*.example.org"], organization="CI")
    assert verified_peer(presented(bot), TRUSTS, NOW) == Peer(
        ("spiffe://example.org/bot", "https://x.test/a"), ("bot.example.org", "*.example.org"),
        "CN=deploy-bot,O=CI", "mesh")
    agent = devcerts.issue(PARTNERS, "agent")
    assert verified_peer(presented(agent), TRUSTS, NOW) == Peer((), (), "CN=agent", "partners")


def test_no_certificate_or_no_trust_is_no_peer():
    bot = devcerts.issue(MESH, "deploy-bot")
    assert verified_peer(None, TRUSTS, NOW) is None
    assert verified_peer(presented(bot), {}, NOW) is None  # no trust: no certificate is asked for


def test_a_chain_through_a_presented_intermediate_verifies():
    intermediate = devcerts.make_ca("issuing", parent=MESH)
    runner = devcerts.issue(intermediate, "runner", uris=["spiffe://example.org/runner"])
    assert verified_peer(presented(runner, intermediate), TRUSTS, NOW).trust == "mesh"
    assert isinstance(verified_peer(presented(runner), TRUSTS, NOW), HandshakeRefused)


@pytest.mark.parametrize("make", [
    lambda: devcerts.issue(devcerts.make_ca("stranger"), "deploy-bot"),
    lambda: devcerts.issue(MESH, "old", valid_from=TODAY - 10 * devcerts.DAY, valid_days=5),
    lambda: devcerts.issue(MESH, "early", valid_from=TODAY + devcerts.DAY),
    lambda: devcerts.issue(devcerts.make_ca("expired", valid_from=TODAY - 10 * devcerts.DAY, valid_days=5), "x"),
], ids=["another-ca", "expired", "not-yet-valid", "from-an-untrusted-expired-ca"])
def test_a_certificate_that_does_not_verify_fails_the_handshake(make):
    assert isinstance(verified_peer(presented(make()), TRUSTS, NOW), HandshakeRefused)


def test_a_leaf_posing_as_an_intermediate_does_not_extend_the_chain():
    leaf = devcerts.issue(MESH, "not-a-ca")
    forged = devcerts.issue(devcerts.Issued(leaf.certificate, leaf.key), "forged")
    assert isinstance(verified_peer(presented(forged, leaf), TRUSTS, NOW), HandshakeRefused)


def test_garbage_instead_of_a_certificate_fails_the_handshake():
    assert isinstance(verified_peer(ClientCertificate("not pem", ""), TRUSTS, NOW), HandshakeRefused)
