"""The decision corpus decided by the exact analysis: every case of `tests/cases/<feature>/` and of
the example, over every protocol it names, must get from the solver the status, reason, rule,
service and enforced status the case expects, as it does from the interpreter
(tests/unit/test_cases.py), the Lua scripts (tests/lua) and a real Envoy (tests/envoy).

The proxy's own steps read each request first, as the analysis takes them as given (the
interpreter models them, and `who-can` reads a request line the same way): admission
(`admission.read`: the route, the normalized path and the header table, or the proxy's own answer,
compared as it is and counted apart) and the token check's verification, which turns the token
into the caller's `Token`, its issuer and claims. A client certificate becomes a `Certificate`:
the CA that issued it, its subject and SANs. Everything after those steps is the solver's
(`analysis.decide`): a wrong audience (403), a refused handshake, a host no service serves (404),
deny-overrides, allow, the default deny and dry-run. A gRPC case's grpc-status is how the proxy
writes its answer, not a decision: it is left to the other tiers.

Cases the analysis does not model are excluded by a named rule (`EXCLUSIONS`), never silently:
the counts per folder and rule are pinned in `EXCLUDED`, so that a growing list is a visible change.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography import x509

from policyc import nodes as n
from policyc.analysis.admission import Refusal, read
from policyc.analysis.callers import SET_BY_TOKEN
from policyc.analysis.decide import Certificate, Decider, Request, Token, Verdict
from policyc.analysis.space import fingerprint
from policyc.analysis.strings import Undecided
from policyc.analysis.witness import AnalysisError
from policyc.cases.casefile import Case, CaseFile, build_request, compare, expectation, load_case_file, protocols
from policyc.checked import Checked
from policyc.pipeline import load_and_check
from policyc.semantics.peer import issued_by, sans_of, subject_text
from policyc.semantics.request import H2C, Decision, RawRequest
from policyc.semantics.tokens import TokenError, authenticate, extract, parse
from tests import CASE_KEYS

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = sorted(p for p in (ROOT / "tests" / "cases").iterdir() if list(p.glob("*.cases.yaml")))
FOLDERS.append(ROOT / "envoy_configs" / "examples" / "backstage")
NOW = 1_800_000_000.0  # the clock of tests/unit/test_cases.py: tokens are minted and checked at it

EXCLUSIONS = {
    "token-refused": "the token check refuses its token with 401 (a signature, key, algorithm, time or "
                     "token JSON it does not accept): the analysis takes the check as given, and its "
                     "tokens are valid now (docs/analysis.md, Bounds)",
    "bounds": "`decide` refuses it as outside the model's other bounds (docs/analysis.md, Bounds), "
              "and says which: an `aud` list, more values of one header than the model tells apart",
}
# Per folder, how many (case, protocol) pairs each rule excludes.
EXCLUDED = {
    "backstage": {"token-refused": 6},
    "grpc": {"token-refused": 9},
    "hosts": {"token-refused": 3},
    "regressions": {"token-refused": 5},  # two: authorization lines that keep their spaces over HTTP/2
    "tokens": {"token-refused": 451, "bounds": 9},
}
DECIDED, REFUSED = "decided by the solver", "refused by the proxy"
_RULE_REASONS = {"allow", "deny", "default-deny"}


@dataclass
class Folder:
    checked: Checked
    decider: Decider
    case_files: list[CaseFile]


@functools.cache
def _folder(path: Path) -> Folder:
    pipeline = load_and_check([str(path)], allowed_roots=[CASE_KEYS])
    assert pipeline.ok, f"{path} does not check"
    case_files = [load_case_file(str(p)) for p in sorted(path.glob("*.cases.yaml"))]
    return Folder(pipeline.checked, Decider(pipeline.checked), case_files)


class Excluded(Exception):
    """A case of a kind the analysis does not model: `rule` names the kind (`EXCLUSIONS`)."""

    def __init__(self, rule: str, detail: str):
        super().__init__(f"{rule}: {detail}")
        self.rule = rule


def _token(checked: Checked, keys: dict, headers) -> Token | None:
    """The token as the token check reads and verifies it, from the Authorization value (the
    header table holds its lines joined as the check joins them). A token it refuses for its
    audience (403) is the analysis's to decide: its issuer is the one its `iss` names."""
    lines = [("authorization", value) for value in headers.get("authorization", ())]
    identity = authenticate(lines, checked.issuers, keys, NOW)
    if identity is None:
        return None
    if isinstance(identity, TokenError) and identity.status == 401:
        raise Excluded("token-refused", identity.reason)
    claims = parse(extract(lines)).claims
    issuer = next(name for name, i in checked.issuers.items() if i.url == claims["iss"])
    return Token(issuer, {k: v for k, v in claims.items() if k not in SET_BY_TOKEN})


def _certificate(checked: Checked, raw: RawRequest) -> Certificate | None:
    """The certificate the client presents (none over h2c: there is no handshake to present it in)."""
    if raw.certificate is None or raw.protocol == H2C:
        return None
    leaf = x509.load_pem_x509_certificates(raw.certificate.chain.encode())[0]
    issuer = next((ca for cas in checked.trusts.values() for ca in cas if issued_by(leaf, ca)), None)
    return Certificate(fingerprint(issuer) if issuer is not None else None, subject_text(leaf.subject),
                       sans_of(leaf, x509.UniformResourceIdentifier), sans_of(leaf, x509.DNSName))


def _decision(checked: Checked, verdict: Verdict, service: str | None) -> Decision:
    """The verdict in the interpreter's terms: a dry-run service's upstream answers (200) in
    place of the status the policy decides, which is reported beside it."""
    if service is not None and checked.services[service].mode is n.Mode.DRY_RUN and verdict.allowed:
        return Decision(200, verdict.reason, verdict.rule, service, enforced_status=verdict.status)
    return Decision(verdict.status, verdict.reason, verdict.rule, service if verdict.reason in _RULE_REASONS else None)


def _decide(folder: Folder, case_file: CaseFile, case: Case, protocol: str) -> tuple[str, Decision]:
    """Who decides `case` over `protocol`, the proxy or the solver, and how (`Excluded` for a
    case the analysis does not model)."""
    checked = folder.checked
    raw = replace(build_request(case.request, checked, case_file.keys, NOW), protocol=protocol)
    seen = read(checked, raw)
    if isinstance(seen, Refusal):
        return REFUSED, Decision(seen.status, "bad-request" if seen.status else "reset", detail=seen.reason)
    token = _token(checked, {**checked.keys, **case_file.keys.published(checked)}, seen.headers)
    request = Request(seen.service, raw.method, seen.path, seen.headers, raw.source, token, _certificate(checked, raw))
    try:
        verdict = folder.decider.decide(request)
    except ValueError as e:
        raise Excluded("bounds", str(e)) from None
    return DECIDED, _decision(checked, verdict, seen.service)


def _run(path: Path) -> tuple[list[str], Counter, Counter]:
    """The failures, how many (case, protocol) pairs the proxy and the solver decided, and how
    many each exclusion rule left out."""
    folder = _folder(path)
    failures, compared, excluded = [], Counter(), Counter()
    for case_file in folder.case_files:
        for case in case_file.cases:
            for protocol in protocols(case):
                try:
                    by, decision = _decide(folder, case_file, case, protocol)
                except Excluded as e:
                    excluded[e.rule] += 1
                    continue
                except (AnalysisError, Undecided) as e:  # a fault of the analysis, or a question too hard
                    failures.append(f"{case.where} {case.name} ({protocol}): {type(e).__name__}: {e}")
                    continue
                compared[by] += 1
                expect = {k: v for k, v in expectation(case, protocol).items() if k != "grpc_status"}
                if differences := compare(expect, decision):
                    failures.append(f"{case.where} {case.name} ({protocol}, {by})\n"
                                    + "\n".join(f"    {d}" for d in differences))
    return failures, compared, excluded


@pytest.mark.parametrize("path", FOLDERS, ids=lambda p: p.name)
def test_corpus_decided_alike_by_the_analysis(path: Path):
    failures, compared, excluded = _run(path)
    print(f"{path.name}: {compared[DECIDED]} {DECIDED}, {compared[REFUSED]} {REFUSED}, "
          f"excluded {dict(sorted(excluded.items())) or 'none'}")
    assert not failures, f"{len(failures)} of {compared.total()} disagree:\n" + "\n".join(failures)
    assert compared[DECIDED], f"{path.name}: the solver decided no case"
    assert dict(excluded) == EXCLUDED.get(path.name, {}), \
        f"{path.name}: the exclusions changed; each rule says why it excludes a case: {EXCLUSIONS}"


def test_every_folder_is_run_and_every_exclusion_is_named():
    assert {p.name for p in FOLDERS} >= {"methods", "paths", "headers", "sources", "hosts", "claims", "tokens",
                                         "membership", "decisions", "grpc", "regressions", "backstage"}
    assert set(EXCLUDED) <= {p.name for p in FOLDERS}
    assert set().union(*EXCLUDED.values()) <= set(EXCLUSIONS)
