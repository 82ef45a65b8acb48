"""Whether a running Envoy took a deploy, asked of its admin interface.

Envoy keeps serving its old policy when it refuses a new file (a library that lacks a hook the
new routes use, a Lua script its LuaJIT refuses), and the folder cannot tell: only the Envoy can.
`rejections(admin)` reads its `update_rejected` counter of each watched file, before a deploy;
`served_versions(admin)` the version of each it serves.
`confirmed(admin, versions, before, timeout)` then waits until the Envoy whose admin interface
is at `admin` (host:port) reports each file's `version_info` in `versions` as its version, and
returns None, or why it did not: an update it rejected since `before`, still another version
after `timeout` seconds, or an admin interface that does not answer. `AdminUnreachable` is raised
by `rejections` when it does not answer.
`Confirmation(admins)` does both for several Envoys around one deploy: made before it (reading
each one's rejections, or why it could not), then `.problems(versions, timeout)` after it.
`Following` does it for `watch`, and asks again while an Envoy has not taken the last deploy.
"""

from __future__ import annotations

import http.client
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable

from ..backends.envoy import HCM_STAT_PREFIX, ROUTE_CONFIG_NAME

# Each watched file's stats: `<prefix>.version_text` and `<prefix>.update_rejected`.
XDS_STATS = {"cds.yaml": "cluster_manager.cds", "lds.yaml": "listener_manager.lds",
             "rds.yaml": f"http.{HCM_STAT_PREFIX}.rds.{ROUTE_CONFIG_NAME}"}
_POLL_SECONDS = 0.05


class AdminUnreachable(OSError):
    """The admin interface did not answer."""


# The admin interface is asked directly: a proxy from the environment must not answer for it.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _stats(admin: str) -> dict[str, str]:
    """Envoy's stats of the watched files, by name."""
    prefixes = "|".join(re.escape(prefix) for prefix in XDS_STATS.values())
    pattern = f"^({prefixes})\\.(version_text|update_rejected)$"
    url = f"http://{admin}/stats?filter=" + urllib.parse.quote(pattern)
    try:
        with _OPENER.open(url, timeout=3) as response:
            text = response.read().decode()
    # urllib's errors are OSErrors, a bad address is a ValueError, a reply that is not HTTP (or is
    # cut short) an HTTPException: an Envoy restarting must not stop `watch`.
    except (OSError, ValueError, http.client.HTTPException) as error:
        raise AdminUnreachable(f"its admin interface at {admin} does not answer ({error})") from None
    stats = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    counts = [stats.get(f"{prefix}.update_rejected", "0") for prefix in XDS_STATS.values()]
    if not all(count.isascii() and count.isdigit() for count in counts):  # `int` refuses "²"
        raise AdminUnreachable(f"its admin interface at {admin} answers what are not Envoy's stats")
    return stats


def _rejected(stats: dict[str, str]) -> dict[str, int]:
    return {file: int(stats.get(f"{prefix}.update_rejected", "0")) for file, prefix in XDS_STATS.items()}


def _versions(stats: dict[str, str]) -> dict[str, str | None]:
    return {file: value.strip('"') if (value := stats.get(f"{prefix}.version_text")) is not None else None
            for file, prefix in XDS_STATS.items()}


def rejections(admin: str) -> dict[str, int]:
    """Each watched file's count of updates the Envoy refused."""
    return _rejected(_stats(admin))


def served_versions(admin: str) -> dict[str, str | None]:
    """The version of each watched file the Envoy serves; None before it read one."""
    return _versions(_stats(admin))


def confirmed(admin: str, versions: dict[str, str], before: dict[str, int], timeout: float,
              renamed: bool = True) -> str | None:
    """None once the Envoy serves every file at its version in `versions`; else why not.
    `renamed`: whether the deploy renamed files, the only thing that makes Envoy read them."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            stats = _stats(admin)
        except AdminUnreachable as error:
            return str(error)
        rejected, served = _rejected(stats), _versions(stats)
        refused = [file for file in versions if rejected[file] > before.get(file, 0)]
        if refused:
            return f"it rejected {', '.join(refused)} and still serves policy {served['rds.yaml']} (its log says why)"
        behind = [file for file, version in versions.items() if served[file] != version]
        if not behind:
            return None
        if time.monotonic() > deadline:
            why = "does it watch this folder?" if renamed else \
                "nothing was renamed, so it did not read the files again: it may have rejected them before"
            return (f"after {timeout:g} s it still serves another version of {', '.join(behind)} "
                    f"(policy {served['rds.yaml']}): {why}")
        time.sleep(_POLL_SECONDS)


class Confirmation:
    """Each Envoy's rejections before a deploy (or why they could not be read), then whether
    each took it."""

    def __init__(self, admins: Iterable[str]) -> None:
        self.admins = list(admins)
        self.before: dict[str, dict[str, int]] = {}
        self.unreachable: dict[str, str] = {}
        for admin in self.admins:
            try:
                self.before[admin] = rejections(admin)
            except AdminUnreachable as error:
                self.unreachable[admin] = str(error)

    def problems(self, versions: dict[str, str], timeout: float, renamed: bool = True) -> dict[str, str | None]:
        """Per Envoy, None once it serves `versions`, else why not (`confirmed`)."""
        return {admin: self.unreachable.get(admin) or confirmed(admin, versions, self.before[admin], timeout, renamed)
                for admin in self.admins}


def outcome(admin: str, version: str, problem: str | None) -> str:
    """What `problems` found for one Envoy, in a line."""
    if problem is None:
        return f"confirmed {version} by the Envoy at {admin}"
    return f"the Envoy at {admin} did not take {version}: {problem}"


class Following:
    """`watch --confirm`: whether the Envoys at `admins` serve what `watch` deployed, logged and
    counted in `metrics`. Each deploy is checked, the first even when it renamed nothing (an Envoy
    may have rejected it before `watch` started); while some Envoy has not taken the last one, it
    is asked again every `timeout` seconds, without waiting, until all have, so that the metrics
    follow what the Envoys serve. Call `before_deploy`, then `deployed`, and `recheck` in between."""

    def __init__(self, admins: Iterable[str], timeout: float, metrics, log: Callable[[str], None]) -> None:
        self.admins, self.timeout, self.metrics, self.log = tuple(admins), timeout, metrics, log
        self.confirmation = Confirmation(())
        self.last: tuple[str, dict[str, str]] | None = None  # the version last checked, and its files'
        self.failing: set[str] = set()  # the Envoys that had not taken it
        self.recheck_at = 0.0

    def before_deploy(self) -> None:
        self.confirmation = Confirmation(self.admins)

    def deployed(self, deployment) -> None:
        renamed = deployment.published_at is not None
        if deployment.version is None or (not renamed and self.last and self.last[0] == deployment.version):
            return
        self._check(deployment.version, deployment.versions, self.timeout, renamed)

    def recheck(self) -> None:
        if self.failing and time.monotonic() >= self.recheck_at:
            self.confirmation = Confirmation(self.admins)
            self._check(*self.last, 0, renamed=True)

    def _check(self, version: str, versions: dict[str, str], timeout: float, renamed: bool) -> None:
        problems = self.confirmation.problems(versions, timeout, renamed)
        self.metrics.confirmed(problems.values())
        again = self.last is not None and self.last[0] == version
        for admin, problem in problems.items():
            if not again or (problem is None and admin in self.failing):  # a recheck tells what changed
                self.log(outcome(admin, version, problem))
        self.last = (version, versions)
        self.failing = {admin for admin, problem in problems.items() if problem is not None}
        self.recheck_at = time.monotonic() + self.timeout
