"""`policyc what-can`: one caller's row of the access matrix. Anonymous callers get exactly the
matrix's own row; a catalog user or group, whose token carries no other claim, is at least as
definite as the matrix's row for any such token; every example request is replayed through the
interpreter (inside the analysis) and carries exactly the caller's claims; the CLI's usage errors
and the exit status of a caller the token check refuses."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from policyc.analysis.callers import Caller, what_can
from policyc.analysis.matrix import ALWAYS, NEVER, SOMETIMES, Matrix
from policyc.cli import main
from policyc.pipeline import load_and_check
from tests.analysis.policies import API, checked, write

EXAMPLE = Path(__file__).parents[2] / "envoy_configs" / "examples" / "backstage"


@pytest.fixture(scope="module")
def example():
    pipeline = load_and_check([str(EXAMPLE)])
    assert pipeline.ok
    matrix = Matrix(pipeline.checked)
    return pipeline.checked, {name: matrix.service_matrix(s) for name, s in pipeline.checked.services.items()}


def _rows(found) -> dict[str, dict[str, str]]:
    """Per row label, per column label, the verdict."""
    return {row.label: {column.label: found.cells[r, c].verdict for c, column in enumerate(found.columns)}
            for r, row in enumerate(found.rows)}


def _caller_verdicts(checked, caller: Caller) -> dict[str, dict[str, str]]:
    access = what_can(checked, caller, sorted(checked.services))
    assert access.refused is None
    return {m.service.name: {column.label: m.cells[0, c].verdict for c, column in enumerate(m.columns)}
            for m in access.matrices}


def _at_least_as_definite(narrower: str, wider: str) -> bool:
    """A caller among a row's callers: `always` and `never` for all of them hold for it too."""
    return wider == SOMETIMES or narrower == wider


def test_anonymous_is_the_matrix_row(example):
    checked, matrices = example
    found = _caller_verdicts(checked, Caller())
    assert found == {name: _rows(m)["no token, no certificate"] for name, m in matrices.items()}
    assert found["payments"]['any method == "/healthz"'] == ALWAYS
    assert set(found["ledger"].values()) == {NEVER}


def test_catalog_callers_agree_with_their_matrix_rows(example):
    checked, matrices = example
    issuers = ("backstage",)
    for ref in sorted(checked.catalog.entities):
        if not ref.startswith(("user:", "group:")):
            continue
        claims = {"sub": ref} if ref.startswith("user:") else {"ent": [ref]}
        found = _caller_verdicts(checked, Caller(issuers, claims))
        for name, m in matrices.items():
            row = _rows(m)[ref]
            assert found[name].keys() == row.keys()
            assert all(_at_least_as_definite(found[name][c], row[c]) for c in row), (ref, name, found[name], row)
    # alice owns payments through payments-team: she writes the API, and a token carrying no
    # e-mail is not a contractor's.
    alice = _caller_verdicts(checked, Caller(issuers, {"sub": "user:default/alice"}))["payments"]
    assert alice['DELETE PATCH POST PUT glob "/api/v1/**"'] == ALWAYS


def test_examples_carry_exactly_the_callers_claims(example):
    checked, _ = example
    claims = {"aud": "api://payments", "scp": ["payments:settle", "other"], "team": {"x": 1}}
    access = what_can(checked, Caller(("okta",), claims), ["payments"])
    (payments,) = access.matrices
    cells = [cell for cell in payments.cells.values() if cell.verdict != NEVER]
    assert {cell.allowed.rule for cell in cells} >= {"settlement-bot", "health"}
    for cell in cells:
        token = cell.allowed.example.description["token"]
        # `team` is tested by no rule: the request space leaves it out, and it changes nothing.
        assert token["issuer"] == "okta" and token["claims"] == {"aud": "api://payments", "scp": ["payments:settle"]}


def test_certificate_callers(tmp_path):
    from policyc.credentials import certs as devcerts
    from tests.analysis.policies import peer_policy

    rules = ('    allow "deploy" when peer.uri == "spiffe://example.org/ns/ci/sa/deploy" and method == POST\n'
             '    allow "ops" when peer.dns suffix ".ops.example.org" and path prefix "/ops/"\n')
    policies = peer_policy(tmp_path, rules, devcerts.make_ca("mesh CA"))

    def verdicts(**certificate) -> dict[str, str]:
        return _caller_verdicts(policies, Caller(trust="mesh", **certificate))["api"]

    assert verdicts(uris=("spiffe://example.org/ns/ci/sa/deploy",)) == {
        "POST any path": ALWAYS, 'any method prefix "/ops/"': SOMETIMES}
    assert verdicts(uris=("spiffe://example.org/ns/ci/sa/other",)) == {
        "POST any path": NEVER, 'any method prefix "/ops/"': NEVER}
    # Only the SANs that pass some test matter, however many the certificate lists.
    many = tuple(f"n{i}.example.org" for i in range(9)) + ("a.ops.example.org",)
    assert verdicts(dns=many) == {"POST any path": SOMETIMES, 'any method prefix "/ops/"': ALWAYS}
    assert verdicts(subject="CN=deploy") == {"POST any path": NEVER, 'any method prefix "/ops/"': NEVER}


def _what_can(folder, *args):
    return CliRunner().invoke(main, ["what-can", str(folder), *args])


def test_cli(tmp_path):
    folder = write(tmp_path, API)
    result = _what_can(folder, "--issuer", "ci", "--claim", 'roles=["deployer"]')
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        'caller: a token from ci with claims {"roles": ["deployer"]}, no client certificate',
        "api (api.internal)",
        "  always     POST == \"/deploy\"  by rule 'deploy'",
        "  always     any method == \"/healthz\"  by rule 'health'",
        "  never      2 other endpoint(s)"]
    result = _what_can(folder, "--anonymous", "--host", "api.internal", "--format", "json")
    data = json.loads(result.stdout)
    assert result.exit_code == 0 and data["caller"] == {"token": None, "certificate": None}
    (service,) = data["services"]
    assert {e["endpoint"]: e["verdict"] for e in service["endpoints"]} == {
        'any method prefix "/admin"': NEVER, 'GET HEAD glob "/api/v1/**"': NEVER, 'POST == "/deploy"': NEVER,
        'any method == "/healthz"': ALWAYS}


def test_cli_refusals_and_usage_errors(tmp_path):
    folder = write(tmp_path, API)
    # idp requires the audience "api": its token for another audience never reaches a rule.
    result = _what_can(folder, "--issuer", "idp", "--claim", "aud=other")
    assert result.exit_code == 4 and "refuses its token (403)" in result.stdout
    for args, message in [
        ([], "describe the caller"),
        (["--anonymous", "--issuer", "idp"], "--anonymous takes no"),
        (["--claim", "a=b", "--trust", "mesh"], "--claim needs a token"),
        (["--issuer", "idb"], "no issuer is named 'idb'"),
        (["--issuer", "idp", "--claim", "exp=1"], "`exp` is set by the token check"),
        (["--issuer", "idp", "--claim", "sub=[1]"], "`sub` is analysed as one string"),
        (["--user", "alice"], "no issuer is marked `catalog users`"),
        (["--uri", "spiffe://x", "--anonymous"], "give --trust"),
        (["--trust", "mesh"], "no trust is named 'mesh'"),
        (["--anonymous", "--service", "api", "--host", "api.internal"], "give --service or --host"),
        (["--anonymous", "--host", "other.internal"], "404 no service serves host 'other.internal'"),
        (["--anonymous", "--service", "apj"], "no service is named 'apj'; did you mean 'api'?"),
    ]:
        result = _what_can(folder, *args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)


def test_cli_catalog_callers():
    result = _what_can(EXAMPLE, "--user", "alic")
    assert result.exit_code == 2 and "did you mean 'user:default/alice'?" in result.output
    result = _what_can(EXAMPLE, "--group", "sre", "--service", "ledger")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:2] == [
        'caller: a token from backstage with claims {"ent": ["group:default/sre"]}, no client certificate',
        "ledger (ledger.internal)"]
    assert "by rule 'sre-read'; else refused by rule 'outside-office'" in result.stdout


def test_who_can_and_what_can_agree(tmp_path):
    """Over a column of one path, the anonymous row's verdict is who-can's, method by method."""
    from policyc.analysis import who_can
    from policyc.analysis.findings import Analyzer

    found = checked(tmp_path, API)
    (api,) = what_can(found, Caller(), ["api"]).matrices
    methods = Analyzer(found).space.methods  # the methods named, and one standing for the others
    exact = [(c, column) for c, column in enumerate(api.columns)
             if column.endpoint.paths and all(t.op.value == "==" for t in column.endpoint.paths)]
    assert len(exact) == 2
    for c, column in exact:
        answers = {who_can(found, "api", method, column.path).anonymous for method in column.methods or methods}
        expected = answers.pop() if len(answers) == 1 else SOMETIMES
        assert api.cells[0, c].verdict == expected, column.label
