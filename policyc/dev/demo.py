"""`make demo`: compile the bundled example, run it in a real Envoy in front of a recording
upstream, replay the example's requests with freshly minted tokens and the machines' client
certificates over HTTP/1.1 and HTTP/2 with TLS, and over HTTP/2 in the clear (h2c), and print what
the reference interpreter expected next to what Envoy did in each protocol.
Envoy fetches the issuers' keys with `remote_jwks` from development IdPs on 127.0.0.1, as it would
from Backstage or Okta. Everything started is stopped at the end.

Then the targets side by side: how many of each service's rules each target expresses, and what
`auto` and `auto-native` pick. When Envoy can load the native filter ($ENVOY_DYNAMIC_MODULES_SEARCH_PATH
holds its library, as `make demo` arranges), the same requests are replayed through it too, and
every decision is compared again.

Last, a catalog change: with the template example beside the example (`envoy_configs/examples/
templates`), `policyc watch` deploys it to a running Envoy, and a component file annotated with a
template is added to its catalog and deleted again: Envoy serves the service, then retires it
(`catalog_demo`).

    python -m policyc.dev.demo envoy_configs/examples/backstage
"""

from __future__ import annotations

import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from .. import nodes as n
from ..backends import compile_outputs, expressible, plan_service
from ..backends.envoy import NATIVE_SEARCH_PATH, OVERRIDE_CLUSTER, Options, clusters
from ..cases.casefile import Keys, build_request, load_case_file, protocols
from ..checked import Checked
from ..diagnostics import render_text
from ..interpret import evaluate
from ..output import write_tree
from ..pipeline import load_and_check
from ..proof.compare import compare
from ..proof.envoy_process import native_library
from ..proof.replay import EnvoyUnderTest
from ..semantics.request import PROTOCOLS
from . import catalog_demo
from .idp import DevIdp, save_keys


def _caller(spec: dict) -> str:
    token, certificate = spec.get("token"), spec.get("certificate")
    if certificate is not None:  # a machine: named by its certificate file
        return "cert:" + Path(certificate["chain"]).stem
    if token is None:
        return "anonymous"
    sub = token.get("claims", {}).get("sub", "?")
    return f"{token.get('issuer')}:{sub}".replace("user:default/", "")


def _outcome(status: int, reason: str, dry_run_status: int | None = None) -> str:
    return f"{status} {reason}" + (f" (would {dry_run_status})" if dry_run_status not in (None, status) else "")


def _served_by_dev_idps(checked: Checked, keys: Keys, work: Path, stack: ExitStack) -> Checked:
    """`checked` with each `jwks file` issuer switched to a remote JWKS that a development IdP on
    127.0.0.1 serves from the same key: Envoy fetches the keys as it would in production."""
    issuers = dict(checked.issuers)
    for name in checked.keys:
        key_file = work / f"{name}.keys.json"
        save_keys(key_file, {"issuer": None, "keys": [keys.private[name]]})
        idp = stack.enter_context(DevIdp(key_file))
        settings = tuple(n.JwksUri(idp.jwks_uri) if isinstance(s, n.JwksFile) else s for s in issuers[name].settings)
        issuers[name] = replace(issuers[name], settings=settings)
    return replace(checked, issuers=issuers, keys={})


def _table(rows: list[tuple]) -> list[str]:
    """Rows as left-aligned columns; the first row is the header."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def _targets_table(checked: Checked) -> list[str]:
    """Per service: how many of its rules each target expresses (Lua and the native filter: all),
    and what `auto` and `auto-native` pick."""
    rows = [("service", "rules", "rbac", "lua", "native", "auto", "auto-native")]
    for name, service in sorted(checked.services.items()):
        rbac_count = sum(expressible(checked, r, "rbac") for r in service.rules)
        rows.append((name, len(service.rules), rbac_count, len(service.rules), len(service.rules),
                     str(plan_service(checked, service, "auto")), str(plan_service(checked, service, "auto-native"))))
    return _table(rows)


def _native_replay(envoy: EnvoyUnderTest, checked: Checked, requests: list, now: float, keys: dict) -> list:
    """The requests through the native filter deciding `checked`, each compared with the
    interpreter's decision."""
    envoy.load(checked, "native")
    return compare(checked, envoy.send_all(requests), now, keys)


def _native_summary(checked: Checked, comparisons: list | None) -> bool:
    """Prints how the native filter decided; whether nothing differed (True when it did not run)."""
    if comparisons is None:
        print("\nthe native filter was not run: Envoy loads libpolicyc_native.so from "
              f"${NATIVE_SEARCH_PATH} (`make demo` builds it and sets the variable)")
        return True
    rules = sum(len(s.rules) for s in checked.services.values())
    differ = [c for c in comparisons if c.differences]
    print(f"\nthe native filter in Envoy, on all {rules} rules: {len(comparisons) - len(differ)} of "
          f"{len(comparisons)} requests decided alike")
    for comparison in differ:
        print(f"  MISMATCH {comparison.report()}")
    return not differ


def _case_rows(case_file, observed: list, checked: Checked, now: float, keys: dict) -> tuple[list[str], int]:
    """The table of each case's decisions, per protocol, and how many requests agreed."""
    rows, agreed = [], 0
    seen_by_case = iter(observed)
    for case in case_file.cases:
        cells, same = {}, True
        for protocol in protocols(case):
            seen = next(seen_by_case)
            expected = evaluate(checked, seen.request, now, keys)
            agrees = (seen.status, seen.reason, seen.rule) == (expected.status, expected.reason, expected.rule)
            agreed, same = agreed + agrees, same and agrees
            cells[protocol] = (_outcome(expected.status, expected.reason, expected.enforced_status),
                               f"{seen.status} {seen.reason}" + ("" if agrees else " (differs)"), seen.rule or "-")
        first = next(iter(cells.values()))
        target = seen.request.target if len(seen.request.target) <= 32 else seen.request.target[:31] + "…"
        rows.append((f"{seen.request.method} {seen.request.host}{target}", _caller(case.request), first[0],
                     *(cells[p][1] if p in cells else "-" for p in PROTOCOLS), first[2], "ok" if same else "MISMATCH"))
    header = ("request", "caller", "interpreter", *(f"envoy {p}" for p in PROTOCOLS), "rule", "")
    return _table([header, *rows]), agreed


def main(argv: list[str]) -> int:
    example = Path(argv[0] if argv else "envoy_configs/examples/backstage")
    pipeline = load_and_check([str(example)])
    if not pipeline.ok:
        for diagnostic in pipeline.diagnostics:
            print(render_text(diagnostic, pipeline.sources), file=sys.stderr)
        return 1
    checked = pipeline.checked
    print(f"policyc check {example}: {len(checked.services)} services, "
          f"{sum(len(s.rules) for s in checked.services.values())} rules, no errors")
    compiled = compile_outputs(checked)
    out = Path("out/demo")
    write_tree(str(out), compiled.files)
    print(f"policyc compile {example} -o {out}: " + ", ".join(f"{n} → {p}" for n, p in compiled.plans.items()))
    case_file = load_case_file(str(next(example.glob("*.cases.yaml"))))
    now = time.time()
    requests = [replace(build_request(case.request, checked, case_file.keys, now), protocol=protocol)
                for case in case_file.cases for protocol in protocols(case)]
    with tempfile.TemporaryDirectory() as work, ExitStack() as stack:
        checked = _served_by_dev_idps(checked, case_file.keys, Path(work), stack)
        keys = case_file.keys.published(checked)
        key_clusters = tuple(c for c in clusters(checked, Options(upstream_override="127.0.0.1:1"))
                             if c["name"] != OVERRIDE_CLUSTER)
        envoy = stack.enter_context(EnvoyUnderTest(Path(work) / "envoy", key_clusters=key_clusters))
        envoy.load(checked, "auto")
        print(f"Envoy is listening on 127.0.0.1:{envoy.port}, with the issuers' keys fetched from development "
              f"IdPs ({', '.join(c['name'] for c in key_clusters)}); replaying {len(requests)} requests\n")
        observed = envoy.send_all(requests)
        native = _native_replay(envoy, checked, requests, now, keys) if native_library() else None
    lines, agreed = _case_rows(case_file, observed, checked, now, keys)
    print("\n".join(lines))
    print(f"\n{agreed} of {len(observed)} requests decided alike by Envoy and the interpreter ({len(lines) - 1} cases "
          f"over {', '.join(PROTOCOLS)}); Envoy stopped.")
    print("\nhow many of each service's rules each target expresses, and what auto picks (auto-native: for an "
          "Envoy that loads the native filter):")
    print("\n".join(_targets_table(checked)))
    native_alike = _native_summary(checked, native)
    catalog_followed = _catalog_change(example.with_name("templates"))
    return 0 if agreed == len(observed) and native_alike and catalog_followed else 1


def _catalog_change(templates: Path) -> bool:
    """The catalog step, on the template example beside the example; whether Envoy followed it."""
    if not (templates / catalog_demo.COMPONENT).is_file():
        print(f"\nthe catalog step was not run: it needs the template example at {templates}")
        return True
    with tempfile.TemporaryDirectory() as work:
        return catalog_demo.run(templates, Path(work))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
