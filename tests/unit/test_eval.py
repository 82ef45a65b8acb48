"""`policyc eval` with the caller given directly (a token's issuer and claims, a client
certificate's names), requests on stdin and in batches, `--fail`, and its input errors.

The corpus test holds callers given directly to the decisions of real tokens and certificates:
every case of the decision corpus and of the example whose token is only claims, or whose
certificate a trust verifies, is decided alike when its caller is given directly instead. A real
Envoy decides those cases as the interpreter does (tests/envoy/test_cases_envoy.py), so eval
decides such a caller as Envoy does.
"""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from policyc.cases.casefile import CaseFileError, build_request, load_case_file, protocols
from policyc.cli import main
from policyc.interpret import evaluate
from policyc.interpret.input import Caller, Certificate, InputError, StandIns, read_entries
from policyc.pipeline import load_and_check
from policyc.semantics.peer import Peer, verified_peer
from policyc.semantics.request import RequestError

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "envoy_configs" / "examples" / "backstage"
CASES = ROOT / "tests" / "cases"
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
BOT = "spiffe://example.org/ns/ci/sa/deploy-bot"
_PLAIN_TOKEN = {"issuer", "claims", "expires_in", "not_before_in"}  # a token that is only its claims


def run(*args, expect: int, stdin: str | None = None):
    result = CliRunner().invoke(main, ["eval", str(EXAMPLE), *map(str, args)], input=stdin)
    assert result.exit_code == expect, (result.output, result.exception)
    return result


def request(**fields) -> str:
    return json.dumps({"method": "GET", "host": "payments.internal", **fields})


# ---------------------------------------------------------------- the corpus, both ways


@functools.cache
def _checked(folder: Path):
    return load_and_check([str(folder)]).checked


def _case_files() -> list[tuple[Path, Path]]:
    corpus = [(CASES / path.relative_to(CASES).parts[0], path) for path in sorted(CASES.glob("*/**/*.cases.yaml"))]
    return corpus + [(EXAMPLE, EXAMPLE / "example.cases.yaml")]


def _caller(spec: dict, sent, checked) -> Caller | None:
    """The case's token and certificate as a caller given directly; None when the case sends what
    a caller given directly cannot be (a token made otherwise, a certificate no trust verifies)."""
    token, certificate = spec.get("token"), None
    if token is not None and (set(token) - _PLAIN_TOKEN or "iss" in token.get("claims", {})
                              or None in token.get("claims", {}).values()):
        return None
    if sent.certificate is not None:
        peer = verified_peer(sent.certificate, checked.trusts, NOW)
        if not isinstance(peer, Peer):
            return None
        certificate = Certificate(peer.trust, peer.uris, peer.dns, peer.subject)
    if token is None:
        return Caller(certificate=certificate)
    claims = dict(token.get("claims", {}))
    for claim, offset in (("exp", "expires_in"), ("nbf", "not_before_in")):
        if offset in token:
            claims[claim] = int(NOW) + int(token[offset])
    return Caller(token["issuer"], claims, certificate)


def _both_ways():
    """(where, decision of the case as written, decision of its caller given directly), per protocol."""
    for folder, path in _case_files():
        checked, case_file = _checked(folder), load_case_file(str(path))
        stand_ins = StandIns(checked, NOW)
        for case in case_file.cases:
            spec = case.request
            if not isinstance(spec, dict) or not ({"token", "certificate"} & set(spec)):
                continue
            try:
                sent = build_request(spec, checked, case_file.keys, NOW)
            except (CaseFileError, RequestError):
                continue
            caller = _caller(spec, sent, checked)
            headers = spec.get("headers", {})
            if caller is None or any(name.lower() == "authorization" for name in headers):
                continue
            given = stand_ins.build({k: v for k, v in spec.items() if k not in ("token", "certificate")}, caller)
            for protocol in protocols(case):
                yield (f"{case.where} ({protocol})",
                       evaluate(checked, replace(sent, protocol=protocol), NOW, case_file.keys.published(checked)),
                       evaluate(checked, replace(given.request, protocol=protocol), NOW, given.keys, given.trusts))


def test_callers_given_directly_are_decided_as_their_tokens_and_certificates():
    compared = list(_both_ways())
    different = [f"{where}:\n  as sent:  {sent}\n  as given: {given}" for where, sent, given in compared
                 if sent != given]
    assert not different, "\n".join(different)
    assert len(compared) > 600  # most of the corpus's ~300 claims-only tokens, over three protocols
    reasons = {sent.reason for _, sent, _ in compared}
    assert {"allow", "deny", "default-deny", "unauthenticated", "forbidden"} <= reasons
    assert any("peer" in sent.caller for _, sent, _ in compared)  # certificates are among them


# ---------------------------------------------------------------- the command line


def test_a_token_caller_on_the_command_line():
    stdin = request(method="POST", path="/api/v1/payments")
    result = run("--request", "-", "--issuer", "backstage", "--claim", "sub=user:default/dave", expect=0, stdin=stdin)
    assert result.stdout.splitlines() == ["200 allow by rule 'team-write' in service 'payments'",
                                          "caller: user:default/dave (issuer backstage)"]
    # `ent` as JSON: a list of groups; bob is not in the catalog's payments team, sre is.
    result = run("--input", "-", "--json", "--issuer", "backstage", "--claim", "sub=user:default/nobody",
                 "--claim", 'ent=["group:default/sre"]', expect=0, stdin=request(path="/api/v1/payments/1"))
    assert json.loads(result.stdout) == {"status": 200, "reason": "allow", "rule": "sre-read", "service": "payments",
                                         "caller": {"issuer": "backstage", "sub": "user:default/nobody"}}


def test_claims_are_checked_as_a_token_of_them_is():
    def decided(*claims, now=NOW) -> dict:
        args = [a for claim in claims for a in ("--claim", claim)]
        return json.loads(run("--request", "-", "--json", "--now", now, "--issuer", "okta", *args,
                              expect=0, stdin=request(path="/healthz")).stdout)

    assert decided("sub=settle-bot")["status"] == 200  # `exp` an hour after --now, `aud` okta's first
    assert decided(f"exp={int(NOW) - 61}")["detail"] == "Jwt is expired"
    assert decided(f"exp={int(NOW) - 60}")["status"] == 200  # within the 60 s clock skew
    assert decided(f"nbf={int(NOW) + 3600}")["detail"] == "Jwt not yet valid"
    assert decided("sub=42")["detail"] == "Jwt payload [sub] field is not a string"  # JSON: a number
    assert decided('sub="42"')["status"] == 200
    assert decided("exp=-1")["detail"] == "Jwt payload [exp] field is not a positive 64 bit integer"
    assert decided("aud=api://elsewhere") == {"status": 403, "reason": "forbidden", "rule": None,
                                              "detail": "Audiences in Jwt are not allowed"}


def test_a_certificate_caller_on_the_command_line():
    stdin = request(method="POST", path="/deployments/v42")
    result = run("--request", "-", "--uri", BOT, expect=0, stdin=stdin)
    assert result.stdout.splitlines() == ["200 allow by rule 'deploy-bot' in service 'payments'",
                                          f"caller: certificate {BOT}"]
    # Named as the access log names it: every URI SAN; else the subject, as Envoy writes it.
    other = json.loads(run("--request", "-", "--json", "--uri", BOT, "--uri", "spiffe://x", "--trust",
                           "mesh", expect=0, stdin=stdin).stdout)
    assert (other["rule"], other["caller"]) == ("deploy-bot", {"peer": f"{BOT},spiffe://x"})
    subject = json.loads(run("--request", "-", "--json", "--subject", "CN=deploy-bot,O=CI", "--dns",
                             "bot.example.org", expect=0, stdin=stdin).stdout)
    assert (subject["reason"], subject["caller"]) == ("default-deny", {"peer": "CN=deploy-bot,O=CI"})
    # h2c has no TLS handshake: no certificate is presented, as with a real one.
    h2c = json.loads(run("--request", "-", "--json", "--uri", BOT, expect=0,
                         stdin=request(method="POST", path="/deployments/v42", protocol="h2c")).stdout)
    assert (h2c["reason"], h2c.get("caller")) == ("default-deny", None)


def test_a_batch_of_json_lines_with_callers_and_fail(tmp_path):
    lines = [request(path="/healthz"),
             "",
             request(path="/api/v1/payments/1", caller={"issuer": "backstage", "claims": {
                 "sub": "user:default/bob", "ent": ["group:default/sre"]}}),
             request(method="POST", path="/deployments/v42", caller={"certificate": {"uri": BOT}}),
             request(path="/debug/vars", caller={"issuer": "backstage", "claims": {"sub": "user:default/bob"}}),
             json.dumps({"path": "/pages/intro", "host": "docs.internal", "caller": {"issuer": "okta",
                                                                                     "claims": {"aud": "x"}}})]
    batch = tmp_path / "requests.jsonl"
    batch.write_text("\n".join(lines) + "\n")
    decisions = [json.loads(line) for line in run("--request", batch, "--json", expect=0).stdout.splitlines()]
    assert [(d["status"], d["reason"], d["rule"]) for d in decisions] == [
        (200, "allow", "health"), (200, "allow", "sre-read"), (200, "allow", "deploy-bot"),
        (403, "deny", "no-debug"), (200, "forbidden", None)]  # docs runs dry: 403 would be enforced
    text = run("--request", batch, "--fail", expect=1)
    assert text.stdout.splitlines()[1] == (f"{batch}:3: 200 allow by rule 'sre-read' in service 'payments'; "
                                           "caller: user:default/bob (issuer backstage)")
    # The dry-run service's refusal counts: it is what `mode enforce` would answer.
    assert text.stderr.strip() == "policyc eval: 2 of 5 request(s) denied"
    allowed = "\n".join(lines[:4])
    assert run("--request", "-", "--fail", expect=0, stdin=allowed).stderr.strip() == (
        "policyc eval: 0 of 3 request(s) denied")


def test_the_caller_in_a_yaml_request(tmp_path):
    spec = tmp_path / "request.yaml"
    spec.write_text("method: POST\npath: /api/v1/payments\nhost: payments.internal\n"
                    "caller: {issuer: backstage, claims: {sub: user:default/dave}}\n")
    assert run("--request", spec, expect=0).stdout.startswith("200 allow by rule 'team-write'")


@pytest.mark.parametrize(("stdin", "args", "message"), [
    (request(), ["--issuer", "backstag"], "error: <stdin>: no issuer is named `backstag`; did you mean `backstage`?"),
    (request(), ["--uri", BOT, "--trust", "mash"], "error: <stdin>: no trust is named `mash`; did you "
                                                             "mean `mesh`?"),
    (request(), ["--issuer", "okta", "--claim", "iss=https://example.okta.com/oauth2/default"],
     "error: <stdin>: `iss` is the issuer's url: name the issuer instead"),
    (request(headers={"authorization": "Bearer x.y.z"}), ["--issuer", "okta"],
     "error: <stdin>: the request has an Authorization header, where the caller's token goes"),
    (request(caller={"issuer": "okta"}), ["--uri", BOT],
     "error: <stdin>: the caller is given both in the request and on the command line"),
    (request(caller={"certificate": {"subject": "CN=bot, O=CI"}}), [],
     "error: <stdin>: certificate subject `CN=bot, O=CI` is not RFC 4514 text, such as `CN=deploy-bot,O=CI`"),
    (request(caller={"certificate": {"dns": ["bücher.example"]}}), [],
     "error: <stdin>: certificate dns `bücher.example` is not ASCII"),
    (request(caller={"issuer": "okta", "claims": {"sub": "x"}, "token": "x"}), [],
     "error: <stdin>: unknown caller field(s): token"),
    (request(caller={"claims": {"sub": "x"}}), [], "error: <stdin>: claims need the issuer of their token"),
    ('{"path": "/x", "path": "/y"}', [], "error: <stdin>: key `path` repeated"),
    ('{"path": NaN}', [], "error: <stdin>: `NaN` is not JSON"),
    ('{"path":\n  }', [], "error: <stdin>:2:3: Expecting value"),
    ("", [], "error: <stdin>: no request"),
])
def test_bad_input_is_located_and_nothing_is_decided(stdin, args, message):
    result = run("--request", "-", *args, expect=2, stdin=stdin)
    assert result.stdout == ""
    assert result.stderr.startswith(message), result.stderr
    assert "Traceback" not in result.output


def test_every_bad_line_of_a_batch_is_named():
    lines = [request(path="/healthz"), '{"path": 1}', '{"path"', request(caller={"issuer": "nobody"}), "[1]"]
    result = run("--request", "-", expect=2, stdin="\n".join(lines))
    assert result.stderr.splitlines() == [
        "error: <stdin>:2: request path must be a string",
        "error: <stdin>:3:8: Expecting ':' delimiter",
        "error: <stdin>:4: no issuer is named `nobody` (declared: backstage, okta)",
        "error: <stdin>:5: a request is an object with method, path, host, headers and source",
        "policyc eval: 4 request(s) not valid; nothing decided"]


def test_option_mistakes_are_usage_errors(tmp_path):
    assert "--claim needs --issuer" in run("--request", "-", "--claim", "sub=x", expect=2, stdin=request()).output
    binary = tmp_path / "request.json"
    binary.write_bytes(b'{"path": "/\xff"}')
    assert f"cannot read request {binary}" in run("--request", binary, expect=2).output
    assert "cannot read request" in run("--request", tmp_path, expect=2).output  # a folder
    assert "claim 'sub' given twice" in run("--request", "-", "--issuer", "okta", "--claim", "sub=x", "--claim",
                                            "sub=y", expect=2, stdin=request()).output


# ---------------------------------------------------------------- any input


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)
_NAMES = st.text(max_size=12) | st.sampled_from([BOT, "bot.example.org", "CN=deploy-bot,O=CI", "CN=a+O=b", ""])
_CERTIFICATE = st.fixed_dictionaries({}, optional={
    "uri": _NAMES | st.lists(_NAMES, max_size=2) | _JSON, "dns": _NAMES | st.lists(_NAMES, max_size=2),
    "subject": _NAMES | _JSON, "trust": st.sampled_from(["mesh", "mash"]) | _JSON})
_CALLER = st.fixed_dictionaries({}, optional={
    "issuer": st.sampled_from(["backstage", "okta", "nobody"]) | _JSON,
    "claims": st.dictionaries(st.sampled_from(["sub", "ent", "aud", "exp", "nbf", "iat", "jti", "iss", "tenant"]),
                              _JSON | st.integers(-2, 2**65), max_size=4) | _JSON,
    "certificate": _CERTIFICATE | _JSON, "token": _JSON})
_REQUEST = st.fixed_dictionaries({}, optional={
    "method": st.sampled_from(["GET", "POST", "get"]) | _JSON, "path": st.sampled_from(["/healthz", "/x/../y"]) | _JSON,
    "host": st.sampled_from(["payments.internal", "docs.internal"]) | _JSON,
    "headers": st.dictionaries(st.sampled_from(["authorization", "x-tenant", "te"]), _NAMES | _JSON, max_size=2),
    "source": st.sampled_from(["10.0.0.1", "::1", "x"]) | _JSON, "protocol": st.sampled_from(["HTTP/1.1", "h2c", "h2"]),
    "caller": _CALLER | _JSON}) | _JSON


@settings(max_examples=300, deadline=None)
@given(data=_REQUEST, now=st.sampled_from([NOW, 0.0, -1e18, 1e300]))
def test_any_request_is_decided_or_refused_in_words(data, now):
    checked = _checked(EXAMPLE)
    try:
        built = StandIns(checked, now).build(data)
    except (InputError, RequestError):
        return
    evaluate(checked, built.request, now, built.keys, built.trusts)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=60) | st.lists(_REQUEST.map(json.dumps) | st.text(max_size=10), max_size=4).map("\n".join))
def test_any_text_is_read_or_refused_in_words(text):
    entries, batch = read_entries(text, "<stdin>")
    assert entries and (batch or len(entries) == 1)
    assert all(e.problem is None or e.problem.startswith("<stdin>") for e in entries)
