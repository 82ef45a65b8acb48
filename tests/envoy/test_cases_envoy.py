"""Every case of the decision corpus (tests/cases/) and of the example, replayed through a real
Envoy for every target and over every protocol its case names (HTTP/1.1, h2c, h2 over TLS),
decided as the interpreter decides. Issuers whose keys the proxy would
fetch get made-up keys, as `policyc verify` gives them. `rbac` and `native` decide the part of each
policy they can express."""

import time
from dataclasses import replace
from pathlib import Path

import pytest

from policyc.backends import expressible_part
from policyc.cases.casefile import build_request, load_case_file, protocols
from policyc.pipeline import load_and_check
from policyc.proof.compare import compare
from policyc.proof.replay import EnvoyUnderTest
from policyc.proof.verify import with_made_up_keys
from tests import CASE_KEYS
from tests.native_target import native_search_path

pytestmark = pytest.mark.envoy

ROOT = Path(__file__).parents[2]
FOLDERS = sorted(p for p in (ROOT / "tests" / "cases").iterdir() if list(p.glob("*.cases.yaml")))
FOLDERS.append(ROOT / "envoy_configs" / "examples" / "backstage")
# Tokens that expire or start within this many seconds of now are decided by the proxy's clock,
# which reads a moment later than the interpreter's: those cases stay with the in-process engines.
CLOCK_MARGIN = 120


def _clock_sensitive(request: dict) -> bool:
    token = request.get("token") or {}
    return any(abs(int(token[key])) <= CLOCK_MARGIN for key in ("expires_in", "not_before_in") if key in token)


@pytest.fixture(scope="module")
def envoy(request, tmp_path_factory):
    with native_search_path(request) as native, EnvoyUnderTest(tmp_path_factory.mktemp("envoy")) as envoy:
        envoy.targets = ("lua", "auto", "rbac") + (("native",) if native else ())
        yield envoy


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_corpus_decides_alike_in_envoy(envoy, folder):
    case_files = [load_case_file(str(p)) for p in sorted(folder.glob("*.cases.yaml"))]
    checked, keys = with_made_up_keys(load_and_check([str(folder)], allowed_roots=[CASE_KEYS]).checked, case_files)
    now = time.time()
    cases = [(case, protocol) for f in case_files for case in f.cases if not _clock_sensitive(case.request)
             for protocol in protocols(case)]
    requests = [replace(build_request(case.request, checked, keys, now), protocol=protocol) for case, protocol in cases]
    failures = []
    for target in envoy.targets:
        policies = expressible_part(checked, target)
        envoy.load(policies, target)
        for (case, protocol), comparison in zip(cases, compare(policies, envoy.send_all(requests), now, {}),
                                                strict=True):
            if comparison.differences:
                failures.append(f"{target} {protocol} {case.where} {case.name}\n{comparison.report()}")
    assert not failures, "\n".join(failures)
