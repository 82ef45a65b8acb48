"""The front half of every command: paths → loaded, parsed and checked policies.

`load_and_check(paths)` returns a `Pipeline` holding the `Checked` set (None when a file could not
be parsed), every source read and every diagnostic, sorted. It reads files only under the inputs'
folders and the `allowed_roots` its caller passes (`roots.Roots`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from . import nodes as n
from .catalog import LiveEntities
from .check import check
from .checked import Checked
from .diagnostics import Diagnostic, has_errors, sort_diagnostics
from .loader import load
from .source import Source


@dataclass
class Pipeline:
    checked: Checked | None
    sources: dict[str, Source] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    policy_set: n.PolicySet | None = None  # what was loaded, even when it could not be checked

    @property
    def ok(self) -> bool:
        return self.checked is not None and not has_errors(self.diagnostics)


def load_and_check(paths: list[str], overlay: Mapping[str, str] | None = None,
                   allowed_roots: Iterable[str] = (), live: LiveEntities | None = None) -> Pipeline:
    """`overlay` (real path → text) stands in for policy files on disk, as in `loader.load`.
    Every file the policies name is read only under the folders of `paths` (a file's own folder)
    and `allowed_roots`; any other is refused with `load/outside-root`. `live`, entities read from
    a running Backstage catalog, stands in for the catalog folders the policies name."""
    loaded = load(paths, overlay, allowed_roots)
    if has_errors(loaded.diagnostics):
        # Checking a set with missing files would only add noise about the names they declare.
        return Pipeline(None, loaded.sources, sort_diagnostics(loaded.diagnostics), loaded.policy_set)
    checked, diagnostics = check(loaded.policy_set, loaded.roots, live)
    sources = {**loaded.sources, **checked.sources}
    return Pipeline(checked, sources, sort_diagnostics(loaded.diagnostics + diagnostics), loaded.policy_set)
