"""Hot-reload latency and failed requests: policies deployed one after another into a folder a
real Envoy watches, while two clients (one kept-alive, one on fresh connections) send requests
without pause. Every tenth deploy changes the listener itself (an issuer comes or goes), which
drains connections; the others replace only the routes.

Latency is from the first rename of a deploy to the first request the new policy decides. The
same reloads without load, in the same run, are the baseline of the ratio. Prints the figures and
writes them to bench/results/reload.json; no assertions.

    .venv/bin/python bench/reload.py [--reloads 50]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from policyc.proof.live import reload_under_load

RESULTS = Path(__file__).parent / "results" / "reload.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reloads", type=int, default=50)
    reloads = parser.parse_args().reloads
    runs = {}
    for name, load in (("idle", False), ("under_load", True)):
        with tempfile.TemporaryDirectory() as work:
            runs[name] = reload_under_load(Path(work), reloads, load=load).summary()
    idle, loaded = runs["idle"]["latency_ms"], runs["under_load"]["latency_ms"]
    runs["under_load_vs_idle_median"] = round(loaded["median"] / idle["median"], 2)
    for name in ("idle", "under_load"):
        run = runs[name]
        print(f"{name:>10}: {run['reloads']} reloads ({run['listener_changes']} listener changes), "
              f"rename → new decision median {run['latency_ms']['median']} ms, p95 {run['latency_ms']['p95']} ms, "
              f"max {run['latency_ms']['max']} ms (listener changes: median "
              f"{run['listener_change_latency_ms']['median']} ms, max {run['listener_change_latency_ms']['max']} ms); "
              f"{run['requests_sent']} requests, {run['failed_requests']} failed")
    print(f"under load / idle (median): {runs['under_load_vs_idle_median']}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(runs, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
