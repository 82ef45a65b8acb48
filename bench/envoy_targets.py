"""Data-path cost of the compiled example, per target, as a ratio of the same Envoy with no
policy filters measured in the same run (wrk on loopback; the upstream is a second Envoy that
answers 200 itself). Prints a table; no assertions.

    .venv/bin/python bench/envoy_targets.py [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from policyc import devtokens
from policyc.backends import compile_outputs
from policyc.backends.envoy import LISTENER_NAME, Options
from policyc.backends.rbac import expressible_part
from policyc.casefile import load_case_file
from policyc.harness.envoy_process import running_envoy
from policyc.pipeline import load_and_check

EXAMPLE = Path(__file__).parents[1] / "envoy_configs" / "examples" / "backstage"
UPSTREAM = {
    "static_resources": {"listeners": [{"name": "upstream", "address": {"socket_address": {
        "address": "127.0.0.1", "port_value": 0}}, "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                         ".HttpConnectionManager",
                "stat_prefix": "upstream",
                "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{
                    "match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}]}}


def without_policy(bootstrap: dict) -> dict:
    """The same bootstrap with only the router: the physical limit."""
    plain = copy.deepcopy(bootstrap)
    hcm = plain["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.router"]
    for host in hcm["route_config"]["virtual_hosts"]:
        host.pop("typed_per_filter_config", None)
    hcm.pop("access_log")
    return plain


def wrk(port: int, headers: dict[str, str], path: str, connections: int, seconds: float, scheme: str) -> float:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    output = subprocess.run(args + [f"{scheme}://127.0.0.1:{port}{path}"], capture_output=True, text=True,
                            check=True).stdout
    if "Non-2xx" in output:
        raise RuntimeError(f"wrk saw refused requests:\n{output}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    checked = load_and_check([str(EXAMPLE)]).checked
    keys = load_case_file(str(EXAMPLE / "example.cases.yaml")).keys
    now = int(time.time())
    claims = {"iss": checked.issuers["backstage"].url, "aud": "backstage", "sub": "user:default/bob",
              "iat": now, "exp": now + 3600}
    token = devtokens.mint(claims, keys.private["backstage"])
    # An SRE reading payments: the deny rules run, then every allow rule up to `sre-read`.
    request = ({"Host": "payments.internal", "Authorization": f"Bearer {token}"}, "/api/v1/payments/42")
    scheme = "https" if checked.listener_tls else "http"  # every configuration keeps the example's TLS
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        (work / "up").mkdir()
        with running_envoy(UPSTREAM, work / "up", args=["--concurrency", "1"]) as upstream:
            upstream_address = f"127.0.0.1:{upstream.listener_ports['upstream']}"
            configs = {}
            options = Options("127.0.0.1:0", "127.0.0.1:0", "/dev/null", upstream_address)
            for target in ("auto", "lua", "rbac"):
                # `rbac` runs the rules it can express: the request below only needs those.
                policies = expressible_part(checked) if target == "rbac" else checked
                configs[target] = yaml.safe_load(compile_outputs(policies, target, options).files["envoy.yaml"])
            configs = {"no filters": without_policy(configs["auto"]), **configs}
            results = {name: {1: [], 8: []} for name in configs}
            for _ in range(args.rounds):
                for name, bootstrap in configs.items():
                    folder = work / name.replace(" ", "-")
                    folder.mkdir(exist_ok=True)
                    with running_envoy(bootstrap, folder, args=["--concurrency", "1"]) as envoy:
                        port = envoy.listener_ports[LISTENER_NAME]
                        wrk(port, *request, 1, 1, scheme)  # warm up: JWT cache, Lua JIT
                        for connections in (1, 8):
                            results[name][connections].append(wrk(port, *request, connections, args.seconds, scheme))
    print(f"{'configuration':<14} {'c=1 req/s':>10} {'ratio':>6} {'c=8 req/s':>10} {'ratio':>6}")
    base = {c: statistics.median(results["no filters"][c]) for c in (1, 8)}
    for name, by_connections in results.items():
        cells = []
        for c in (1, 8):
            ratios = [r / b for r, b in zip(by_connections[c], results["no filters"][c], strict=True)]
            cells.append(f"{statistics.median(by_connections[c]):>10,.0f} {statistics.median(ratios):>6.2f}")
        print(f"{name:<14} {' '.join(cells)}")
    print(f"(medians of {args.rounds} rounds of {args.seconds:g} s; ratios per round against 'no filters', "
          f"baseline {base[1]:,.0f} and {base[8]:,.0f} req/s)")


if __name__ == "__main__":
    main()
