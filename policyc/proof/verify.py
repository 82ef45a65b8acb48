"""`policyc verify`: users' policies in a real Envoy against the interpreter. Takes a checked set,
case files, a runner and the protocols to speak; replays every case plus generated requests per
service, over each protocol, for each target, and returns each comparison. Remote-JWKS issuers
get made-up keys: what is verified is the policy, not the identity provider.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..backends import expressible_part
from ..cases.casefile import CaseFile, Keys, build_request, protocols
from ..checked import Checked
from ..semantics.request import PROTOCOLS
from .compare import Comparison, compare
from .generate import RequestGenerator
from .replay import EnvoyUnderTest, Runner

BATCH = 50  # requests between progress updates


@dataclass
class Report:
    comparisons: dict[str, list[Comparison]] = field(default_factory=dict)  # by target

    @property
    def mismatches(self) -> list[tuple[str, Comparison]]:
        return [(t, c) for t, found in self.comparisons.items() for c in found if c.differences]

    @property
    def count(self) -> int:
        return sum(len(found) for found in self.comparisons.values())


def with_made_up_keys(checked: Checked, case_files: list[CaseFile]) -> tuple[Checked, Keys]:
    """The set with a made-up key for every issuer whose keys the proxy would fetch, and every
    signing key: the case files' own and the made-up ones."""
    keys = Keys()
    for case_file in case_files:
        keys.private.update(case_file.keys.private)
    for name in checked.issuers:
        if name not in checked.keys:
            keys.for_issuer(checked, name)
    return replace(checked, keys={**checked.keys, **keys.published(checked)}), keys


def verify(checked: Checked, case_files: list[CaseFile], runner: Runner, targets: list[str], examples: int,
           seed: int = 0, progress: Callable[[int], None] = lambda done: None,
           spoken: tuple[str, ...] = PROTOCOLS) -> Report:
    """`spoken`: the protocols to send requests in; a case that names its protocol goes in that
    one only, when it is spoken."""
    checked, keys = with_made_up_keys(checked, case_files)
    now = time.time()
    requests = [replace(build_request(case.request, checked, keys, now), protocol=protocol)
                for f in case_files for case in f.cases for protocol in protocols(case) if protocol in spoken]
    generator = RequestGenerator(checked, keys.private, seed)
    for service in checked.services.values():
        requests += [replace(request, protocol=protocol) for request in
                     (generator.request(service) for _ in range(examples)) for protocol in spoken]
    report = Report()
    with tempfile.TemporaryDirectory() as work, EnvoyUnderTest(Path(work), runner) as envoy:
        for target in targets:
            policies = expressible_part(checked, target)
            envoy.load(policies, target)
            found = report.comparisons[target] = []
            for start in range(0, len(requests), BATCH):
                found += compare(policies, envoy.send_all(requests[start:start + BATCH]), now, {})
                progress(min(BATCH, len(requests) - start))
    return report
