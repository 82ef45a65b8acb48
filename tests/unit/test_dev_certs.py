"""`policyc dev-certs`: valid PEM files (keys for their owner alone), client and listener
certificates that a verifier accepts under the CA, a policy trusting that CA decides on the client
certificate's SPIFFE ID, an existing CA issues later certificates, and nothing is ever replaced."""

import datetime
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store

from policyc.cli import main

BOT = "spiffe://example.org/ns/ci/sa/deploy-bot"


def run(*args, expect: int):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == expect, (result.output, result.stderr, result.exception)
    return result


def certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def verified_client(folder: Path, name: str):
    """The client certificate `name` verified as a TLS server verifies client certificates."""
    store = Store([certificate(folder / "ca.pem")])
    verifier = PolicyBuilder().store(store).time(datetime.datetime.now(datetime.UTC)).build_client_verifier()
    return verifier.verify(certificate(folder / f"{name}.pem"), [])


@pytest.fixture
def certs(tmp_path) -> Path:
    run("dev-certs", tmp_path / "certs", "--spiffe-id", BOT, "--client-dns", "builder=bot.example.org", expect=0)
    return tmp_path / "certs"


def test_writes_valid_pem_files_with_private_keys_for_their_owner(certs):
    assert sorted(p.name for p in certs.iterdir()) == [
        "builder.key", "builder.pem", "ca.key", "ca.pem", "deploy-bot.key", "deploy-bot.pem", "server.key",
        "server.pem"]
    for key in certs.glob("*.key"):
        assert key.stat().st_mode & 0o777 == 0o600, key
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
        assert private.public_key() == certificate(key.with_suffix(".pem")).public_key()


def test_client_certificates_chain_to_the_ca_with_their_sans(certs):
    bot = verified_client(certs, "deploy-bot")
    assert bot.subjects == [x509.UniformResourceIdentifier(BOT)]
    builder = verified_client(certs, "builder")
    assert builder.subjects == [x509.DNSName("bot.example.org")]


def test_the_listener_certificate_verifies_for_its_names(tmp_path):
    run("dev-certs", tmp_path, "--server-dns", "proxy.test", "--server-dns", "localhost", expect=0)
    verifier = (PolicyBuilder().store(Store([certificate(tmp_path / "ca.pem")]))
                .time(datetime.datetime.now(datetime.UTC)).build_server_verifier(x509.DNSName("proxy.test")))
    chain = verifier.verify(certificate(tmp_path / "server.pem"), [])
    assert chain[-1] == certificate(tmp_path / "ca.pem")


def test_a_policy_trusting_the_ca_decides_on_the_spiffe_id(certs, tmp_path):
    stranger = tmp_path / "stranger"
    run("dev-certs", stranger, "--no-server", "--spiffe-id", BOT, expect=0)  # the same ID from another CA
    (tmp_path / "p.policy").write_text(f"""\
tls {{
    cert file "certs/server.pem"
    key file "certs/server.key"
}}
trust dev {{
    ca file "certs/ca.pem"
}}
service deploy {{
    hosts ["deploy.test"]
    upstream "127.0.0.1:8080"
    allow "bot" when peer.uri == "{BOT}" and method == POST
}}
""")
    request = {"method": "POST", "path": "/deployments", "host": "deploy.test"}
    cases = {"cases": [
        {"name": "the bot", "request": {**request, "certificate": {"chain": "certs/deploy-bot.pem",
                                                                    "key": "certs/deploy-bot.key"}},
         "expect": {"status": 200, "rule": "bot", "h2c": {"status": 403, "rule": None}}},
        {"name": "another workload", "request": {**request, "certificate": {"chain": "certs/builder.pem",
                                                                            "key": "certs/builder.key"}},
         "expect": {"status": 403, "reason": "default-deny"}},
        {"name": "the same ID from an untrusted CA", "request": {
            **request, "certificate": {"chain": "stranger/deploy-bot.pem", "key": "stranger/deploy-bot.key"}},
         "expect": {"status": 0, "reason": "handshake-refused", "h2c": {"status": 403, "reason": "default-deny"}}},
    ]}
    (tmp_path / "p.cases.yaml").write_text(json.dumps(cases))
    assert "3 passed, 0 failed" in run("test", tmp_path / "p.policy", tmp_path / "p.cases.yaml", expect=0).stdout


def test_an_existing_ca_issues_the_new_certificates(certs):
    ca = (certs / "ca.pem").read_bytes()
    result = run("dev-certs", certs, "--no-server", "--spiffe-id", "runner=spiffe://example.org/ns/ci/sa/x", expect=0)
    assert result.stderr.splitlines()[:2] == [f"wrote {certs / 'runner.pem'}", f"wrote {certs / 'runner.key'}"]
    assert (certs / "ca.pem").read_bytes() == ca
    assert verified_client(certs, "runner").subjects == [x509.UniformResourceIdentifier("spiffe://example.org/ns/ci/sa/x")]


def test_nothing_is_replaced_and_nothing_written_then(certs):
    before = {p.name: p.read_bytes() for p in certs.iterdir()}
    result = run("dev-certs", certs, "--no-server", "--spiffe-id", "fresh=spiffe://example.org/fresh",
                 "--spiffe-id", BOT, expect=1)
    assert result.stderr == (f"policyc: not replacing what exists: {certs / 'deploy-bot.pem'}, "
                             f"{certs / 'deploy-bot.key'}; nothing written\n")
    assert {p.name: p.read_bytes() for p in certs.iterdir()} == before
    assert "not replacing what exists" in run("dev-certs", certs, expect=1).stderr  # server.pem


@pytest.mark.parametrize(("args", "message"), [
    (["--spiffe-id", "spiffe://Example.org/a"], "is not a SPIFFE ID"),
    (["--spiffe-id", "spiffe://example.org"], "is not a SPIFFE ID"),
    (["--spiffe-id", "spiffe://example.org/a/../b"], "a '.' or '..' segment"),
    (["--spiffe-id", "https://example.org/a"], "is not a SPIFFE ID"),
    (["--spiffe-id", "../x=spiffe://example.org/a"], "cannot name a certificate"),
    (["--client-dns", "bad name"], "is not a DNS name"),
    (["--server-dns", "proxy.test:443"], "is not a DNS name"),
    (["--spiffe-id", "spiffe://example.org/ca"], "two certificates would be written as ca.pem"),
    (["--spiffe-id", "spiffe://a.org/bot", "--spiffe-id", "spiffe://b.org/bot"], "written as bot.pem"),
    (["--no-server", "--server-dns", "x.test"], "not with --no-server"),
])
def test_bad_names_are_usage_errors_and_write_nothing(tmp_path, args, message):
    assert message in run("dev-certs", tmp_path / "certs", *args, expect=2).stderr
    assert not (tmp_path / "certs").exists()


def test_a_broken_or_half_ca_is_refused(certs):
    def refused() -> str:
        return run("dev-certs", certs, "--no-server", "--client-dns", "a.test", expect=1).stderr

    (certs / "ca.key").unlink()
    assert "ca.key is missing beside" in refused()
    (certs / "ca.key").write_bytes((certs / "server.key").read_bytes())
    assert "cannot use the CA in" in refused() and "the key is not the certificate's" in refused()
    (certs / "ca.pem").write_bytes((certs / "server.pem").read_bytes())
    assert "not a CA's" in refused()
    (certs / "ca.pem").write_text("not PEM\n")
    assert "not a PEM certificate and unencrypted private key" in refused()
    assert not (certs / "a.test.pem").exists()
