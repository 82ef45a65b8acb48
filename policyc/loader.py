"""Load stage: paths (files or folders of `.policy` files) → one `PolicySet` with its imports.

Returns the set, the `Source` of every file read (for rendering diagnostics) and diagnostics
for unreadable files, syntax errors, import cycles and files outside the roots (`roots.Roots`: the
inputs' folders and `allowed_roots`), which are never opened. An `overlay` (real path → text)
stands in for files on disk: an editor's unsaved buffers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import nodes as n
from .diagnostics import Diagnostic
from .files import why
from .roots import Roots
from .source import Source, Span
from .syntax import parse


@dataclass
class Loaded:
    """The result of loading: the policy set, every source read, and what went wrong."""

    policy_set: n.PolicySet
    roots: Roots
    sources: dict[str, Source] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)


def expand_inputs(paths: list[str]) -> list[str]:
    """Files as given; folders replaced by the `.policy` files under them, sorted."""
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(str(p) for p in Path(path).rglob("*.policy"))
        else:
            files.append(path)
    return files


def decode_source(path: str, data: bytes, foreign: bool = False) -> tuple[Source | None, list[Diagnostic]]:
    """Policy text read from a file or from stdin, as a `Source` named `path`; it must be UTF-8."""
    try:
        return Source(path, data.decode("utf-8"), foreign), []
    except UnicodeDecodeError as error:
        return None, [Diagnostic("load/not-utf8", f"`{path}` is not UTF-8 text", Source(path, "").span_at_offset(0),
                                 hint=f"byte {error.start} cannot be decoded")]


class _Loader:
    def __init__(self, overlay: Mapping[str, str], roots: Roots) -> None:
        self.overlay = overlay
        self.files: dict[str, n.PolicyFile] = {}  # by real path, in load order
        self.result = Loaded(n.PolicySet(()), roots)
        self.stack: list[str] = []  # real paths of the files being loaded, for cycles

    def read(self, path: str, span: Span | None, path_span: Span | None = None) -> Source | None:
        """The text of `path`, named at `span` (by the string at `path_span`), or None and a
        diagnostic: unreadable, not UTF-8, or outside the roots (then never opened)."""
        refused = self.result.roots.refusal(path, path_span or span or Span(path, 1, 1, 1, 1))
        if refused is not None:
            self.result.diagnostics.append(refused)
            return None
        real = os.path.realpath(path)
        # Judged by the real name: a `*.policy` symlink to another file is no policy either.
        foreign = not real.endswith(".policy")
        if real in self.overlay:
            return Source(path, self.overlay[real], foreign)
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            where = span or Span(path, 1, 1, 1, 1)
            self.result.diagnostics.append(Diagnostic(
                "load/file-not-found", f"cannot read `{path}`: {why(error)}", where))
            return None
        source, diagnostics = decode_source(path, data, foreign)
        self.result.diagnostics += diagnostics
        return source

    def load(self, path: str, span: Span | None = None, path_span: Span | None = None) -> None:
        """Load `path`, named by the import at `span` (its string at `path_span`), or an input."""
        key = os.path.realpath(path)
        if key in self.stack:
            cycle = [os.path.relpath(p) for p in self.stack[self.stack.index(key):]] + [os.path.relpath(key)]
            self.result.diagnostics.append(Diagnostic(
                "load/import-cycle", "import cycle: " + " → ".join(f"`{p}`" for p in cycle), span,
                hint="move what both files need into a third file that both import"))
            return
        if key in self.files:
            return
        source = self.read(path, span, path_span)
        if source is None:
            return
        self.result.sources[path] = source
        file, diagnostics = parse(source)
        self.result.diagnostics += diagnostics
        if file is None:
            return
        self.stack.append(key)
        for item in file.of(n.Import):
            self.load(n.relative_to_declaring_file(item.span, item.path), item.span, item.path_span)
        self.stack.pop()
        self.files[key] = file


def read_policy_file(path: str) -> tuple[Source | None, list[Diagnostic]]:
    """One file's text, its imports not followed (what `policyc fmt` rewrites), or why not."""
    loader = _Loader({}, Roots.of([path]))
    return loader.read(path, None), loader.result.diagnostics


def load(paths: list[str], overlay: Mapping[str, str] | None = None, allowed_roots: Iterable[str] = ()) -> Loaded:
    """Parse every input and everything it imports; each file once, in dependency order. Files
    are read only under the inputs' folders and `allowed_roots`."""
    loader = _Loader(overlay or {}, Roots.of(paths, allowed_roots))
    inputs = expand_inputs(paths)
    for path in inputs:
        loader.load(path)
    loader.result.policy_set = n.PolicySet(tuple(loader.files.values()))
    return loader.result
