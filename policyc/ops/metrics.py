"""What `policyc watch` has done, as Prometheus metrics.

`WatchMetrics` counts deploys, their confirmations by running Envoys and catalog fetches, failed
ones apart, and says whether the last of each failed; `render()` is the Prometheus text format.
`serving(address, metrics)` answers `GET /metrics` on `HOST:PORT` while the block runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_HELP = {
    "deploys_total": ("counter", "deploys tried"),
    "deploy_failures_total": ("counter", "deploys refused for errors in the policies or the catalog"),
    "deploy_failing": ("gauge", "1 when the last deploy was refused: Envoy serves the last good policy"),
    "confirms_total": ("counter", "with --confirm: checks of whether an Envoy serves the last deploy, one per "
                                  "Envoy, after each deploy and again while one has not taken it"),
    "confirm_failures_total": ("counter", "of those, checks where the Envoy had rejected it, had not taken it in "
                                          "time, or did not answer"),
    "confirm_failing": ("gauge", "1 while some Envoy is not known to serve the last deploy (it rejected it, has "
                                 "not taken it, or does not answer)"),
    "catalog_fetches_total": ("counter", "reads of the live catalog tried"),
    "catalog_fetch_failures_total": ("counter", "reads of the live catalog that failed (unreachable, HTTP "
                                                "error, time-out, an answer too large or not JSON)"),
    "catalog_failing": ("gauge", "1 when the last read of the live catalog failed"),
    "catalog_last_success_timestamp_seconds": ("gauge", "when the live catalog was last read (Unix time)"),
}


@dataclass
class WatchMetrics:
    deploys_total: int = 0
    deploy_failures_total: int = 0
    deploy_failing: int = 0
    confirms_total: int = 0
    confirm_failures_total: int = 0
    confirm_failing: int = 0
    catalog_fetches_total: int = 0
    catalog_fetch_failures_total: int = 0
    catalog_failing: int = 0
    catalog_last_success_timestamp_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def deployed(self, ok: bool) -> None:
        with self._lock:
            self.deploys_total += 1
            self.deploy_failures_total += not ok
            self.deploy_failing = int(not ok)

    def confirmed(self, problems: Iterable[str | None]) -> None:
        """One check of the last deploy with each Envoy: None where it serves it, else why not."""
        failed = [problem is not None for problem in problems]
        with self._lock:
            self.confirms_total += len(failed)
            self.confirm_failures_total += sum(failed)
            self.confirm_failing = int(any(failed))

    def fetched(self, ok: bool) -> None:
        with self._lock:
            self.catalog_fetches_total += 1
            self.catalog_fetch_failures_total += not ok
            self.catalog_failing = int(not ok)
            if ok:
                self.catalog_last_success_timestamp_seconds = time.time()

    def render(self) -> str:
        lines = []
        with self._lock:
            for item in fields(self):
                if item.name in _HELP:
                    kind, text = _HELP[item.name]
                    name = f"policyc_watch_{item.name}"
                    lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {getattr(self, item.name):g}"]
        return "\n".join(lines) + "\n"


@contextmanager
def serving(address: tuple[str, int], metrics: WatchMetrics) -> Iterator[ThreadingHTTPServer]:
    """`GET /metrics` answered on `address` until the block ends; the server is yielded (its
    `server_address` holds the port when 0 was asked for)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path != "/metrics":
                self.send_error(404)
                return
            body = metrics.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # scrapes are not news
            pass

    server = ThreadingHTTPServer(address, Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
