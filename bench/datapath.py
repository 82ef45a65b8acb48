"""Data-path cost of compiled policies, as ratios to the same Envoy with the policy filters
removed (router and access log kept), measured in the same round: of requests per second, and of
Envoy's CPU time per request (user and system, from /proc), which a busy machine disturbs less;
and Envoy's memory with 1 and 1,000 compiled services against the same services without filters.

Every Envoy runs with one worker; the upstream is a second Envoy answering 200 itself; load comes
over loopback from wrk (HTTP/1.1) and from h2load (HTTP/2 in the clear, one stream in flight per
connection as wrk has one request). The configurations all start first and stay up, and each round
measures all of them in turn, over both protocols, so a busy moment on the machine touches a
round's baseline as it touches the rest.

    .venv/bin/python bench/datapath.py [--seconds 2] [--rounds 3] [--targets native] [--no-memory]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from machine import measured
from policies import Probe, check_text, rule_requests, rule_set, services_set
from stats import ratios, summary

from policyc.backends import compile_outputs, expressible_part
from policyc.backends.envoy import (
    ALLOW_FILTER,
    DENY_FILTER,
    LISTENER_NAME,
    LUA_FILTER,
    NATIVE_FILTER,
    PREFIX_MAP_FROM,
    Options,
)
from policyc.backends.resolve import JWT_FILTER
from policyc.cases.casefile import load_case_file
from policyc.checked import Checked
from policyc.credentials import tokens as devtokens
from policyc.interpret import RawRequest
from policyc.pipeline import load_and_check
from policyc.proof.client import send
from policyc.proof.envoy_process import envoy_binary, serving_envoy

EXAMPLE = Path(__file__).parents[1] / "envoy_configs" / "examples" / "backstage"
RULE_COUNTS = (10, 100, 1000)
TARGETS = ("rbac", "lua", "auto", "native")  # native: libpolicyc_native.so on $ENVOY_DYNAMIC_MODULES_SEARCH_PATH
MEMORY_TARGETS = ("auto", "lua", "native")
CONNECTIONS = (1, 8)
ROUTES_ONLY = f"{RULE_COUNTS[0]} rules, no filters"
POLICY_FILTERS = {JWT_FILTER, DENY_FILTER, LUA_FILTER, NATIVE_FILTER, ALLOW_FILTER}
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


def _progress(line: str) -> None:
    """Progress goes to stderr, so that stdout holds the JSON alone."""
    print(line, file=sys.stderr)


@dataclass(frozen=True)
class Running:
    port: int
    pid: int


# ---------------------------------------------------------------- configurations


def _hcm(bootstrap: dict) -> dict:
    return bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def _routes(host: dict) -> list[dict]:
    """A virtual host's routes, whether listed or in its matcher (envoy.py, `route_matcher`): the
    refusal routes ahead of the prefix map, if any, and each prefix's route or route list."""
    if "routes" in host:
        return host["routes"]
    matcher = host["matcher"]
    ahead = matcher.get("matcher_list", {}).get("matchers", [])
    tree = matcher["on_no_match"]["matcher"] if ahead else matcher
    actions = [*(match["on_match"] for match in ahead), *tree["matcher_tree"]["prefix_match_map"]["map"].values()]
    configs = [action["action"]["typed_config"] for action in actions]
    return [route for config in configs for route in config.get("routes", [config])]


def keeping_filters(bootstrap: dict, kept: set[str]) -> dict:
    """The same bootstrap with only the `kept` policy filters (and their per-host and per-route
    configs): its routes, their metadata and the access log stay."""
    trimmed = copy.deepcopy(bootstrap)
    hcm = _hcm(trimmed)
    removed = POLICY_FILTERS - kept
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] not in removed]
    for host in hcm["route_config"]["virtual_hosts"]:
        for holder in (host, *_routes(host)):
            per_filter = {k: v for k, v in holder.pop("typed_per_filter_config", {}).items() if k not in removed}
            if per_filter:
                holder["typed_per_filter_config"] = per_filter
    return trimmed


def baseline(bootstrap: dict) -> dict:
    """No policy filters, and the catch-all host routed upstream too, so one baseline serves
    every host the configurations below are asked for."""
    plain = keeping_filters(bootstrap, set())
    hosts = _hcm(plain)["route_config"]["virtual_hosts"]
    cluster = next(route["route"]["cluster"] for h in hosts for route in _routes(h) if "route" in route)
    hosts[-1]["routes"] = [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]
    return plain


def compiled_bootstrap(checked: Checked, target: str, upstream: str, prefix_map_from: int = PREFIX_MAP_FROM) -> dict:
    options = Options("127.0.0.1:0", "127.0.0.1:0", "/dev/null", upstream, prefix_map_from=prefix_map_from)
    # `rbac` runs the rules RBAC can express; the requests sent only need those.
    policies = expressible_part(checked, target)
    compiled = compile_outputs(policies, target, options)
    if compiled.diagnostics:
        raise RuntimeError(f"compile failed: {compiled.diagnostics[:3]}")
    return yaml.safe_load(compiled.files["envoy.yaml"])


def plain_http(bootstrap: dict) -> dict:
    """The bootstrap with its listener's TLS taken off: TLS costs the same with and without the
    policy filters, and wrk's requests stay comparable with the generated rule sets'."""
    for listener in bootstrap["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            chain.pop("transport_socket", None)
    return bootstrap


def example_token() -> str:
    checked = load_and_check([str(EXAMPLE)]).checked
    keys = load_case_file(str(EXAMPLE / "example.cases.yaml")).keys
    now = int(time.time())
    claims = {"iss": checked.issuers["backstage"].url, "aud": "backstage", "sub": "user:default/bob",
              "iat": now, "exp": now + 3600}
    return devtokens.mint(claims, keys.private["backstage"])


def configurations(upstream: str, targets: tuple[str, ...] = TARGETS,
                   prefix_map_from: int = PREFIX_MAP_FROM) -> dict[str, tuple[dict, list[Probe]]]:
    """Name → (bootstrap, requests to send it), the generated rule sets compiled for `targets`
    (their routes in a prefix map from `prefix_map_from` prefixes on, as `Options` has it)."""
    example = load_and_check([str(EXAMPLE)]).checked
    full = plain_http(compiled_bootstrap(example, "auto", upstream))
    # An SRE reading payments: the deny rules run, then every allow rule up to `sre-read`.
    with_token = [Probe("token", "GET", "/api/v1/payments/42",
                        (("Host", "payments.internal"), ("Authorization", f"Bearer {example_token()}")), 200)]
    configs = {
        "no filters": (baseline(full), with_token + rule_requests(RULE_COUNTS[0])[:1]),
        "jwt_authn only": (keeping_filters(full, {JWT_FILTER}), with_token),
        "full chain, token": (full, with_token),
    }
    if "native" in targets:  # the whole example in the native filter, which reads the token's claims
        configs["full chain, native"] = (plain_http(compiled_bootstrap(example, "native", upstream)), with_token)
    for rules in RULE_COUNTS:
        checked = check_text(rule_set(rules))
        for target in targets:
            configs[f"{rules} rules, {target}"] = (compiled_bootstrap(checked, target, upstream, prefix_map_from),
                                                   rule_requests(rules))
        if rules == RULE_COUNTS[0]:
            # The generated service's own routes (refusal routes, route metadata) and access log with
            # no policy filter, where `no filters` routes the same request by a bare catch-all: what
            # a target costs beyond them. The last target's routes (native's, one per service).
            configs[ROUTES_ONLY] = (keeping_filters(configs[f"{rules} rules, {targets[-1]}"][0], set()),
                                    rule_requests(rules)[:1])
    return configs


# ---------------------------------------------------------------- running Envoy and wrk


@contextmanager
def running(bootstrap: dict, workdir: Path, wrapper: tuple[str, ...] = (), timeout: float = 60) -> Iterator[Running]:
    """Envoy with one worker on `bootstrap`, started by `wrapper` (a program that runs another,
    as valgrind does) if given; yields its listener port and process id."""
    process: list[subprocess.Popen] = []

    @contextmanager
    def launch(envoy_args: list[str], log_path: Path):
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([*wrapper, envoy_binary(), *envoy_args], stdout=log, stderr=subprocess.STDOUT)
            process.append(proc)
            try:
                yield proc.poll
            finally:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    workdir.mkdir(parents=True, exist_ok=True)
    with serving_envoy(launch, bootstrap, workdir, ["--concurrency", "1"], timeout) as envoy:
        port = envoy.listener_ports.get(LISTENER_NAME) or next(iter(envoy.listener_ports.values()))
        yield Running(port, process[0].pid)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _milliseconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS_MS[unit]


def wrk(port: int, probe: Probe, connections: int, seconds: float) -> dict:
    """Requests sent, requests/s and p50/p99 latency (ms) of `probe` sent by `connections` connections."""
    assert probe.method == "GET", "wrk sends GET without a script"
    args = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    for name, value in probe.headers:
        args += ["-H", f"{name}: {value}"]
    output = subprocess.run(args + [f"http://127.0.0.1:{port}{probe.path}"], capture_output=True, text=True,
                            check=True).stdout
    total = int(re.search(r"(\d+) requests in", output).group(1))
    refused = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", output)) else 0
    if refused != (total if probe.status >= 300 else 0) or "Socket errors" in output:
        raise RuntimeError(f"{probe.name}: expected every answer {probe.status}, wrk saw:\n{output}")
    return {"requests": total, "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
            "p50": _milliseconds(re.search(r"^ +50% +(\S+)$", output, re.M).group(1)),
            "p99": _milliseconds(re.search(r"^ +99% +(\S+)$", output, re.M).group(1))}


def h2load(port: int, probe: Probe, connections: int, seconds: float) -> dict:
    """As `wrk`, over HTTP/2 in the clear with prior knowledge (h2c), one stream in flight per
    connection; the latencies from h2load's per-request log."""
    assert probe.method == "GET", "h2load sends GET unless given a body"
    with tempfile.NamedTemporaryFile(mode="r") as requests_log:
        args = ["h2load", "-t1", f"-c{connections}", "-m1", f"-D{max(1, round(seconds))}",
                "--log-file", requests_log.name]
        for name, value in probe.headers:  # HTTP/2 has no Host header: the authority stands for it
            args += ["-H", f"{':authority' if name.lower() == 'host' else name}: {value}"]
        output = subprocess.run(args + [f"http://127.0.0.1:{port}{probe.path}"],
                                capture_output=True, text=True, check=True).stdout
        micros = [int(line.split("\t")[2]) for line in requests_log.read().splitlines() if line.strip()]
    done, errored, timeout = (int(x) for x in re.search(
        r"requests: \d+ total, \d+ started, (\d+) done, \d+ succeeded, \d+ failed, (\d+) errored, (\d+) timeout",
        output).groups())
    classes = dict(zip(("2", "3", "4", "5"), map(int, re.search(
        r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output).groups()), strict=True))
    if done == 0 or errored or timeout or classes[str(probe.status)[0]] != done:
        raise RuntimeError(f"{probe.name}: expected every answer {probe.status}, h2load saw:\n{output}")
    cuts = statistics.quantiles(micros, n=100, method="inclusive")
    return {"requests": done, "rps": float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", output).group(1)),
            "p50": round(cuts[49] / 1000, 3), "p99": round(cuts[98] / 1000, 3)}


# The protocols the data path is measured over, and the tool sending each.
LOADS = {"HTTP/1.1": wrk, "h2c": h2load}


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (/proc/PID/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _with_cpu(load, envoy: Running, probe: Probe, connections: int, seconds: float) -> dict:
    """`load`'s figures and Envoy's CPU time per request (µs) while it ran."""
    before = _cpu_seconds(envoy.pid)
    result = load(envoy.port, probe, connections, seconds)
    return {**result, "cpu_us": 1e6 * (_cpu_seconds(envoy.pid) - before) / max(result["requests"], 1)}


# ---------------------------------------------------------------- measures


def measure_data_path(seconds: float, rounds: int, log=_progress, targets: tuple[str, ...] = TARGETS) -> dict:
    """{protocol: {configuration: {request: {connections: {rps, p50, p99, ratios}}}}}."""
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        work = Path(folder)
        upstream = stack.enter_context(running(UPSTREAM, work / "upstream"))
        configs = configurations(f"127.0.0.1:{upstream.port}", targets)
        envoys = {}
        for i, (name, (bootstrap, _)) in enumerate(configs.items()):
            envoys[name] = stack.enter_context(running(bootstrap, work / f"config{i}"))
        samples: dict = {protocol: {name: {p.name: {c: [] for c in CONNECTIONS} for p in probes}
                                    for name, (_, probes) in configs.items()} for protocol in LOADS}
        for name, (_, probes) in configs.items():
            for probe in probes:  # warm up (JWT cache, Lua JIT), and check each answer once
                for _ in range(20):
                    status = send(envoys[name].port, RawRequest(probe.method, probe.path, None, probe.headers))[0]
                    if status != probe.status:
                        raise RuntimeError(f"{name}, {probe.name}: {status}, not {probe.status}")
        for round_number in range(rounds):
            log(f"  data path: round {round_number + 1} of {rounds}")
            for name, (_, probes) in configs.items():
                for probe, connections, (protocol, load) in itertools.product(probes, CONNECTIONS, LOADS.items()):
                    samples[protocol][name][probe.name][connections].append(
                        _with_cpu(load, envoys[name], probe, connections, seconds))
    return {protocol: _summarized(by_name) for protocol, by_name in samples.items()}


def _summarized(samples: dict) -> dict:
    base = samples["no filters"]
    result = {}
    for name, by_probe in samples.items():
        result[name] = {}
        for probe, by_connections in by_probe.items():
            # Token requests against the baseline's token request, the rest against a plain one.
            reference = base["token"] if probe == "token" else base["worst rule"]
            result[name][probe] = {}
            for c, runs in by_connections.items():
                cell = {key: summary([r[key] for r in runs]) for key in ("rps", "p50", "p99", "cpu_us")}
                cell["ratio"] = ratios([r["rps"] for r in runs], [r["rps"] for r in reference[c]])
                # Inverted, so that it reads as `ratio` does: 1 is no cost, lower is costlier.
                cell["cpu ratio"] = ratios([r["cpu_us"] for r in reference[c]], [r["cpu_us"] for r in runs])
                cell["p50 ratio"] = ratios([r["p50"] for r in runs], [r["p50"] for r in reference[c]])
                cell["p99 ratio"] = ratios([r["p99"] for r in runs], [r["p99"] for r in reference[c]])
                result[name][probe][c] = cell
    return result


def _rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def measure_memory(rounds: int, log=_progress) -> dict:
    """Envoy's resident memory (MiB) with 1 and 1,000 compiled services, for each of
    MEMORY_TARGETS (the native filter expresses every rule of these services), each against its
    own routes, route metadata and access log with no policy filters (`keeping_filters`): the
    targets route differently (RBAC's routes split services by path prefix), so each has its own
    baseline. Measured after one request per service has passed."""
    samples: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for count in (1, 1000):
            checked = check_text(services_set(count))
            configs = {}
            for target in MEMORY_TARGETS:
                compiled = compiled_bootstrap(checked, target, "127.0.0.1:9")
                configs[target], configs[_unfiltered(target)] = compiled, keeping_filters(compiled, set())
            for round_number in range(rounds):
                log(f"  memory: {count} services, round {round_number + 1} of {rounds}")
                for name, bootstrap in configs.items():
                    with running(bootstrap, work / f"{count}-{name}-{round_number}") as envoy:
                        _visit_services(envoy.port, count)
                        samples.setdefault(count, {}).setdefault(name, []).append(_rss_mib(envoy.pid))
    return {count: {target: {"rss": summary(by_name[target]), "baseline": summary(by_name[_unfiltered(target)]),
                             "ratio": ratios(by_name[target], by_name[_unfiltered(target)])}
                    for target in MEMORY_TARGETS}
            for count, by_name in samples.items()}


def _unfiltered(target: str) -> str:
    return f"{target}, no filters"


def _visit_services(port: int, count: int) -> None:
    """One request per service (to a dead upstream: 503 once allowed), so every per-host
    filter config has run once."""
    for s in range(count):
        send(port, RawRequest("GET", "/api/v0/x", f"svc{s}.internal"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=TARGETS,
                        help="the targets the generated rule sets are compiled for (default: all)")
    measures = parser.add_mutually_exclusive_group()
    measures.add_argument("--no-memory", action="store_true", help="measure the data path only")
    measures.add_argument("--no-data-path", action="store_true", help="measure memory only")
    args = parser.parse_args()
    result: dict = {"machine": {}}
    if not args.no_data_path:
        result["data path"], result["machine"]["data path"] = measured(
            lambda: measure_data_path(args.seconds, args.rounds, targets=tuple(args.targets)))
    if not args.no_memory:
        result["memory"], result["machine"]["memory"] = measured(lambda: measure_memory(args.rounds))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
