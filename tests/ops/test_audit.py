"""`policyc audit` on access logs written by a real Envoy: every request of the example's case
file is reported with the caller, rule and verdict the reference interpreter gives it, dry-run
denials included; callers with client certificates by their identity; filters by service and
time; table and JSON."""

import json
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from policyc.cli import main
from policyc.credentials import certs as devcerts
from policyc.credentials import tokens as devtokens
from policyc.interpret import evaluate
from policyc.ops.audit import parse_since
from policyc.pipeline import load_and_check
from policyc.proof.replay import EnvoyUnderTest
from policyc.semantics.peer import ClientCertificate
from policyc.semantics.request import RawRequest

KEYS = Path(__file__).parents[1] / "cases" / "keys"


def audit(*args) -> str:
    result = CliRunner().invoke(main, ["audit", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.stdout


def named(decision) -> str:
    """The caller as the interpreter names it: the token's `sub`, else the certificate, else anonymous."""
    return decision.caller.get("sub") or decision.caller.get("peer") or "anonymous"


def expected_verdict(decision) -> str:
    if decision.reason == "allow":
        return "allowed"
    return "would-deny" if decision.dry_run else "denied"


@pytest.mark.envoy
def test_audit_reports_each_request_as_the_interpreter_decides_it(example_log):
    log, decisions = example_log
    events = json.loads(audit(log, "--format", "json"))["events"]
    assert len(events) == len(decisions)
    got = [(e["service"], e["caller"], e["reason"], e["rule"], e["verdict"]) for e in events]
    # A refused token ends the decision before the host is looked up: the interpreter names no
    # service there, while the log names the host's.
    expected = [(d.service or e["service"], named(d), d.reason, d.rule, expected_verdict(d))
                for d, e in zip(decisions, events, strict=True)]
    assert got == expected
    assert "spiffe://example.org/ns/ci/sa/deploy-bot" in {e["caller"] for e in events}  # a certificate caller
    verdicts = {e["verdict"] for e in events}
    assert verdicts == {"allowed", "denied", "would-deny"}
    # Only a request the proxy refuses before routing (400) is decided by no policy version.
    versions = {e["policy_version"] for e in events if e["reason"] != "bad-request"}
    assert len(versions) == 1 and None not in versions


@pytest.mark.envoy
def test_audit_filters_by_service_and_time(example_log):
    log, decisions = example_log
    docs = json.loads(audit(log, "--service", "docs", "--format", "json"))
    assert {e["service"] for e in docs["events"]} == {"docs"}
    assert len(docs["events"]) == sum(d.service == "docs" for d in decisions)
    would_deny = {row["rule"]: row["would-deny"] for row in docs["summary"] if row["would-deny"]}
    expected = Counter(d.rule or f"({d.reason})" for d in decisions
                       if d.service == "docs" and d.dry_run and d.reason != "allow")
    assert would_deny == expected and sum(expected.values()) >= 3
    assert json.loads(audit(log, "--since", "1h", "--format", "json"))["events"]
    assert json.loads(audit(log, "--since", "2999-01-01T00:00:00", "--format", "json"))["events"] == []


@pytest.mark.envoy
def test_audit_table_names_the_rules_and_skips_foreign_lines(example_log, tmp_path):
    log, decisions = example_log
    mixed = tmp_path / "mixed.log"
    mixed.write_text("[2026-01-01 00:00:00.000][1][warning][main] not an access-log line\n" + log.read_text())
    table = audit(mixed)
    assert table.splitlines()[0].split() == ["time", "service", "caller", "request", "status", "verdict", "rule",
                                              "version"]
    assert "would be denied by dry-run services; 1 lines were not access-log entries" in table
    assert f"{len(decisions)} requests:" in table


CERTIFICATE_POLICY = """
tls { cert file "server.pem" key file "server.key" }
trust mesh { ca file "mesh.pem" }
issuer idp {
    url "https://idp.test"
    jwks file "idp.jwks.json"
}
service bots {
    hosts ["bots.internal"]
    upstream "127.0.0.1:9"
    allow "machines" when peer trusted and not authenticated
}
"""


@pytest.mark.envoy
def test_audit_names_certificate_callers_and_gives_their_certificate(tmp_path):
    """Envoy logs a client certificate's URI SANs (joined by ",") and subject: the caller is the
    token's `sub`, else those URIs, else the subject, as the interpreter names it; the JSON gives
    the certificate beside the token."""
    root = tmp_path / "policies"
    root.mkdir()
    mesh = devcerts.make_ca("mesh")
    server = devcerts.issue(mesh, "proxy.test", dns=["proxy.test"], server=True)
    for name, text in {"mesh.pem": mesh.cert_pem, "server.pem": server.cert_pem, "server.key": server.key_pem,
                       "bots.policy": CERTIFICATE_POLICY}.items():
        (root / name).write_text(text)
    shutil.copy(KEYS / "idp.jwks.json", root)
    checked = load_and_check([str(root)]).checked
    issued = {
        "uris": devcerts.issue(mesh, "builder", uris=["spiffe://example.org/ns/ci/sa/builder",
                                                       "https://agents.example.org/x"], dns=["a.example.org"]),
        "subject": devcerts.issue(mesh, "deploy-bot", dns=["bot.example.org"], organization="CI"),
    }
    presented = {name: ClientCertificate(c.cert_pem, c.key_pem) for name, c in issued.items()}
    now = time.time()
    token = devtokens.mint({"iss": "https://idp.test", "sub": "user:default/alice", "exp": int(now) + 600},
                           json.loads((KEYS / "idp.private.jwk.json").read_text()))
    requests = [RawRequest("GET", "/x", "bots.internal", certificate=presented["uris"]),
                RawRequest("GET", "/x", "bots.internal", certificate=presented["subject"]),
                RawRequest("GET", "/x", "bots.internal", (("authorization", f"Bearer {token}"),),
                           certificate=presented["uris"]),
                RawRequest("GET", "/x", "bots.internal")]
    with EnvoyUnderTest(tmp_path / "envoy") as envoy:
        envoy.load(checked, "auto")
        observed = envoy.send_all(requests)
    decisions = [evaluate(checked, seen.request, now) for seen in observed]
    events = json.loads(audit(tmp_path / "envoy" / "access.log", "--format", "json"))["events"]
    assert [e["caller"] for e in events] == [named(d) for d in decisions] == [
        "spiffe://example.org/ns/ci/sa/builder,https://agents.example.org/x", "CN=deploy-bot,O=CI",
        "user:default/alice", "anonymous"]
    assert [(e["peer"], e["peer_subject"], e["issuer"], e["verdict"]) for e in events] == [
        ("spiffe://example.org/ns/ci/sa/builder,https://agents.example.org/x", "CN=builder", None, "allowed"),
        (None, "CN=deploy-bot,O=CI", None, "allowed"),
        ("spiffe://example.org/ns/ci/sa/builder,https://agents.example.org/x", "CN=builder", "https://idp.test",
         "denied"),
        (None, None, None, "denied")]
    table = audit(tmp_path / "envoy" / "access.log")
    assert "CN=deploy-bot,O=CI" in table and "anonymous" in table


def test_since_takes_iso_times_and_durations():
    assert parse_since("2026-01-02T03:04:05Z").isoformat() == "2026-01-02T03:04:05+00:00"
    assert parse_since("2026-01-02T03:04:05").isoformat() == "2026-01-02T03:04:05+00:00"
    now = parse_since("2026-01-02T03:04:05Z")
    assert parse_since("90m", now).isoformat() == "2026-01-02T01:34:05+00:00"
    with pytest.raises(ValueError):
        parse_since("yesterday")
