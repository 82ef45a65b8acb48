"""Changes policy in running Envoys without a restart.

`deploy(paths, folder, target, options)` checks and compiles the policies and publishes the result
in `folder`, a directory Envoy watches (`envoy -c FOLDER/envoy.yaml`): the bootstrap once, then
`cds.yaml`, `rds.yaml` and `lds.yaml`, each written beside its name and renamed into place. Envoy
reloads on a rename into the folder, never sees a half-written file, and keeps serving the old
policy if it refuses a new one. Nothing is written when the policies have errors.
Policies read files only under the inputs' folders and `allowed_roots`, as `load_and_check`.
It returns a `Deployment`: the policy version (as every Envoy on the folder reports it), or the
diagnostics that stopped it. A grant whose window has ended is left out of what is published.
`watch(...)` deploys again whenever a file the policies read changes, and at the end of each
grant's window (Envoy refuses by the window on its own; the deploy drops the grant from the config),
and reports a deploy only when it changed something (a policy version, or errors). Given a live
catalog (`catalog_api.CatalogClient`), both read the catalog from it instead of the policies' catalog
folders, and `watch` reads it again every `catalog_period` seconds, deploying when its entities
changed; when a read fails, the failure is logged and counted and the last good policy stays.
With Envoys' admin interfaces to `confirm`, `watch` waits after each deploy until each serves it,
and logs and counts one that does not, asking again until it does (`confirm.Following`).
`configmap(compiled, name)` packs the same files into a Kubernetes ConfigMap (a Secret when they hold
the listener's private key): mounted as a volume,
the kubelet swaps its files by a rename in the mounted folder, which Envoy watches the same way.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .. import grants
from .. import nodes as n
from ..analysis.locked import with_locks_checked
from ..backends import Compiled, compile_dynamic
from ..backends.envoy import Options, Plan
from ..backends.yaml_out import dump_manifest
from ..catalog import LiveEntities, yaml_files
from ..diagnostics import Diagnostic
from ..loader import expand_inputs
from ..output import file_mode
from ..pipeline import Pipeline, load_and_check
from .catalog_api import CatalogClient, CatalogError
from .confirm import Following
from .metrics import WatchMetrics


@dataclass(frozen=True)
class Deployment:
    pipeline: Pipeline
    version: str | None = None  # None: nothing was deployed
    diagnostics: list[Diagnostic] = field(default_factory=list)  # check and compile, errors and warnings
    plans: dict[str, Plan] = field(default_factory=dict)
    published_at: float | None = None  # time.monotonic() at the first rename; None: nothing renamed
    versions: dict[str, str] = field(default_factory=dict)  # each xDS file's version, as Envoy reports it


def deploy(paths: list[str], folder: str | Path, target: str = "auto", options: Options | None = None,
           allowed_roots: Iterable[str] = (), live: LiveEntities | None = None) -> Deployment:
    """`live`: entities read from a running Backstage catalog, in place of the catalog folders."""
    pipeline = with_locks_checked(load_and_check(paths, allowed_roots=allowed_roots, live=live))
    if not pipeline.ok:
        return Deployment(pipeline, diagnostics=pipeline.diagnostics)
    config_dir = Path(folder).resolve()
    checked = grants.without_ended(pipeline.checked, time.time())
    compiled = compile_dynamic(checked, target, options or Options(), str(config_dir))
    if compiled.diagnostics:
        return Deployment(pipeline, diagnostics=pipeline.diagnostics + compiled.diagnostics, plans=compiled.plans)
    published_at = publish(config_dir, compiled.files)
    return Deployment(pipeline, compiled.version, pipeline.diagnostics, compiled.plans, published_at,
                      compiled.versions)


def publish(folder: Path, files: dict[str, str]) -> float | None:
    """Every changed file written beside its name, then all renamed into `folder` in the given
    order; unchanged files are left alone. Envoy reloads only on a rename into a watched folder,
    never on a rewrite in place (envoy-lab §7). Returns time.monotonic() at the first rename, or
    None when every file was already in place."""
    folder.mkdir(parents=True, exist_ok=True)
    staged = []
    try:
        for name, text in files.items():
            target = folder / name
            if target.exists() and target.read_text(encoding="utf-8") == text:
                continue
            fd, staging = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
            staged.append((staging, target))
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(staging, file_mode(text))  # mkstemp made it 0600: no one read it meanwhile
        if not staged:
            return None
        renamed_at = time.monotonic()
        for staging, target in staged:
            os.rename(staging, target)
        return renamed_at
    finally:
        for staging, _ in staged:
            Path(staging).unlink(missing_ok=True)


def configmap(compiled: Compiled, name: str) -> str:
    """The files of `compile_dynamic` as a ConfigMap manifest, labelled with the policy version;
    as a Secret when a file holds the listener's private key (a `tls` block), since anyone who may
    read ConfigMaps could read it. The kubelet updates a mounted Secret the same way."""
    files = dict(sorted(compiled.files.items()))
    metadata = {"name": name, "labels": {"app.kubernetes.io/name": "policyc",
                                         "policyc/policy-version": compiled.version}}
    if any(file_mode(text) == 0o600 for text in files.values()):
        return dump_manifest({"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque",
                              "stringData": files})
    return dump_manifest({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": files})


def _inputs(paths: list[str], pipeline: Pipeline | None, live: bool = False) -> set[str]:
    """The files a deploy of `paths` reads: the `.policy` files under them, and every file the
    last load read or the policies name (imports, catalog files, key and certificate files),
    missing ones included, so that creating one counts. Nothing else under `paths` counts: a log
    written there, by `watch` itself or by Envoy, must not set off a deploy. With a `live` catalog
    the catalog folders are not read, and its entities are not files."""
    files = set(expand_inputs(paths))
    if pipeline is not None:
        files.update(path for path, source in pipeline.sources.items() if not source.live)
    if pipeline is not None and pipeline.policy_set is not None:
        files.update(pipeline.policy_set.named_files())
        for catalog in pipeline.policy_set.catalogs if not live else ():
            # A file added to a catalog folder counts too; an unreadable folder is the deploy's to report.
            files.update(yaml_files(n.relative_to_declaring_file(catalog.span, catalog.path), lambda _: None))
    return files


def _snapshot(files: set[str]) -> dict[str, tuple[int, int] | None]:
    """(mtime, size) of each file; None for one that is missing."""
    snapshot = {}
    for file in files:
        try:
            stat = os.stat(file)
        except OSError:
            snapshot[file] = None
        else:
            snapshot[file] = (stat.st_mtime_ns, stat.st_size)
    return snapshot


def watch(paths: list[str], folder: str | Path, report: Callable[[Deployment], None], target: str = "auto",
          options: Options | None = None, stop: threading.Event | None = None, interval: float = 0.25,
          allowed_roots: Iterable[str] = (), catalog: CatalogClient | None = None, catalog_period: float = 30.0,
          metrics: WatchMetrics | None = None, log: Callable[[str], None] = lambda _: None,
          confirm: Iterable[str] = (), confirm_timeout: float = 10.0) -> None:
    """Deploy now, then again after every change to the files the policies read, until `stop`
    is set. A policy with errors is reported and not deployed: the folder keeps the last good
    one. A deploy that leaves the folder as it was, with the version last reported, is not reported.
    With a live `catalog`, nothing is deployed before it is first read; it is read again every
    `catalog_period` seconds and a change of its entities deploys. A failed read is logged (`log`)
    and counted in `metrics`, and changes nothing: later deploys use the entities last read.
    With `confirm` (Envoy admin interfaces, host:port), each deploy waits up to `confirm_timeout`
    seconds for each Envoy in turn to serve it, and one not taken is asked about again
    (`confirm.Following`); each outcome is logged and counted."""
    stop, metrics = stop or threading.Event(), metrics or WatchMetrics()
    following = Following(confirm, confirm_timeout, metrics, log) if confirm else None
    pipeline, reported, seen, live, next_read, grant_end = None, None, None, None, 0.0, None
    while not stop.is_set():
        if grant_end is not None and time.time() >= grant_end:
            seen = None  # a grant ran out: deploy without it (Envoy already refuses by its window)
        if catalog is not None and time.monotonic() >= next_read:
            next_read = time.monotonic() + catalog_period
            fetched = _read_catalog(catalog, metrics, log, was_failing=metrics.catalog_failing == 1)
            if fetched is not None and fetched != live:
                live, seen = fetched, None  # a deploy, whether or not a file changed
        if catalog is not None and live is None:
            stop.wait(min(interval, max(0.0, next_read - time.monotonic())))
            continue
        current = _snapshot(_inputs(paths, pipeline, live is not None))
        if current != seen:
            # An editor's save may be caught half written: deploy only what stays put a moment.
            stop.wait(interval)
            if _snapshot(set(current)) != current:
                continue
            if following:
                following.before_deploy()
            deployment = deploy(paths, folder, target, options, allowed_roots, live)
            metrics.deployed(deployment.version is not None)
            pipeline = deployment.pipeline
            grant_end = grants.next_end(pipeline.checked, time.time()) if pipeline.checked else None
            # Files first read by this load count as seen as they were before it.
            seen = {file: current.get(file, stat)
                    for file, stat in _snapshot(_inputs(paths, pipeline, live is not None)).items()}
            if deployment.version is None or deployment.version != reported or deployment.published_at is not None:
                report(deployment)
            reported = deployment.version
            if following:
                following.deployed(deployment)
        if following:
            following.recheck()
        stop.wait(min(interval, max(0.0, next_read - time.monotonic())) if catalog else interval)


def _read_catalog(catalog: CatalogClient, metrics: WatchMetrics, log: Callable[[str], None],
                  was_failing: bool) -> LiveEntities | None:
    """The live catalog's entities, or None (logged and counted) when they cannot be read."""
    try:
        fetched = catalog.fetch()
    except CatalogError as error:
        metrics.fetched(ok=False)
        log(f"{error}; the last good policy stays")
        return None
    metrics.fetched(ok=True)
    if was_failing:
        log(f"catalog {catalog.url}: read again")
    return fetched
