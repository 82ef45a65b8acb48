"""Envoy's work per request, counted rather than timed: the instructions Envoy runs for each
request, counted by valgrind's callgrind (every instruction Envoy executes, whatever else the
machine is doing), in the configurations bench/datapath.py times, and their ratio to the Envoy
with no policy filters (no-filter instructions over this one's, so that 1 is no cost, as
datapath.py's ratios read). A busy or small machine makes a request take longer, not run more
instructions, so these ratios repeat where timed ones swing; they leave out the kernel's work and
the time an instruction waits (for memory, for a lock), which timed runs on a quiet machine see.

Each configuration runs in one Envoy (one worker) under callgrind. Per request kind and protocol
(HTTP/1.1, and HTTP/2 in the clear), h2load sends 200 requests to warm up, then `--requests` more
over one connection between a reset and a dump of the counters.

    .venv/bin/python bench/instructions.py [--requests 1000] [--targets native] [--prefix-map-from 32]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
from contextlib import ExitStack
from pathlib import Path

from datapath import TARGETS, UPSTREAM, Running, configurations, running
from policies import Probe

from policyc.backends.envoy import PREFIX_MAP_FROM
from policyc.proof.envoy_process import envoy_binary

WARM_UP = 200
PROTOCOLS = {"HTTP/1.1": ("--h1",), "h2c": ()}


def _callgrind(out: Path) -> tuple[str, ...]:
    # The envoy on PATH may be a script that execs the binary: follow it. Counting starts at the
    # first reset anyway, so Envoy's start costs nothing here.
    return ("valgrind", "--tool=callgrind", "--trace-children=yes", "--dump-instr=no",
            f"--callgrind-out-file={out}")


def _send(envoy: Running, probe: Probe, requests: int, protocol: str) -> None:
    """`requests` of `probe` over one connection, each answered with the probe's status."""
    args = ["h2load", "-n", str(requests), "-c1", "-m1", *PROTOCOLS[protocol]]
    for name, value in probe.headers:  # HTTP/2 has no Host header: the authority stands for it
        args += ["-H", f"{':authority' if name.lower() == 'host' else name}: {value}"]
    output = subprocess.run(args + [f"http://127.0.0.1:{envoy.port}{probe.path}"], capture_output=True, text=True,
                            check=True).stdout
    statuses = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    if int(statuses.group("2345".index(str(probe.status)[0]) + 1)) != requests:
        raise RuntimeError(f"{probe.name}: expected {requests} answers {probe.status}, h2load saw:\n{output}")


def _counted(envoy: Running, dumps: Path, probe: Probe, requests: int, protocol: str) -> float:
    """Instructions per request of `probe`: the counters reset after the warm-up, dumped after."""
    _send(envoy, probe, WARM_UP, protocol)
    subprocess.run(["callgrind_control", "--zero", str(envoy.pid)], check=True, capture_output=True)
    _send(envoy, probe, requests, protocol)
    before = set(dumps.parent.glob(f"{dumps.name}.*"))
    subprocess.run(["callgrind_control", "--dump", str(envoy.pid)], check=True, capture_output=True)
    [dump] = set(dumps.parent.glob(f"{dumps.name}.*")) - before
    totals = re.search(r"^(?:totals|summary): (\d+)$", dump.read_text(), re.M)
    return int(totals.group(1)) / requests


def measure_instructions(requests: int, log=print, targets: tuple[str, ...] = TARGETS,
                         prefix_map_from: int = PREFIX_MAP_FROM) -> dict:
    """{protocol: {configuration: {request: {"instructions", "ratio"}}}}."""
    counts: dict = {protocol: {} for protocol in PROTOCOLS}
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        work = Path(folder)
        upstream = stack.enter_context(running(UPSTREAM, work / "upstream"))
        for i, (name, (bootstrap, probes)) in enumerate(configurations(f"127.0.0.1:{upstream.port}",
                                                                       targets, prefix_map_from).items()):
            log(f"  instructions: {name}")
            dumps = work / f"config{i}" / "callgrind.out"
            dumps.parent.mkdir()
            with running(bootstrap, dumps.parent, _callgrind(dumps), timeout=300) as envoy:
                for protocol in PROTOCOLS:
                    counts[protocol][name] = {probe.name: _counted(envoy, dumps, probe, requests, protocol)
                                              for probe in probes}
    return {protocol: _with_ratios(by_name) for protocol, by_name in counts.items()}


def _with_ratios(counts: dict) -> dict:
    base = counts["no filters"]
    # Token requests against the baseline's token request, the rest against a plain one.
    return {name: {probe: {"instructions": round(value),
                           "ratio": base["token" if probe == "token" else "worst rule"] / value}
                   for probe, value in by_probe.items()}
            for name, by_probe in counts.items()}


def table(results: dict, protocol: str) -> list[str]:
    lines = [f"Instructions Envoy runs per request over {protocol} (callgrind), and the ratio of `no filters`' "
             "to them", f"{'configuration':<20} {'request':<13} {'instructions':>12} {'ratio':>6}"]
    for name, by_probe in results[protocol].items():
        for probe, cell in by_probe.items():
            lines.append(f"{name:<20} {probe:<13} {cell['instructions']:>12,} {cell['ratio']:>6.2f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="requests counted per request kind")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--prefix-map-from", type=int, default=PREFIX_MAP_FROM,
                        help="a host's routes in a prefix map from this many prefixes on (1: always)")
    args = parser.parse_args()
    envoy_binary()  # fail early, before a long run, when there is no Envoy
    results = measure_instructions(args.requests, targets=tuple(args.targets), prefix_map_from=args.prefix_map_from)
    for protocol in PROTOCOLS:
        print("\n".join(table(results, protocol)) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
