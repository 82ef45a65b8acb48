"""The folders a policy set may read: every file a policy names (imports, `jwks file`, `ca file`,
`cert file`, `key file`, `catalog`) must lie under one of them once symlinks and `..` are resolved.

A policy is text that a change under review controls; without this, `import "/proc/self/environ"`
would make the compiler read a CI job's secrets and echo them in a diagnostic. The roots are the
folders named as inputs (a file's own folder) and those allowed explicitly (`--allow-path`). A path
outside them gets `load/outside-root` at the string naming it, and is never opened.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from .diagnostics import Diagnostic
from .source import Span

OUTSIDE_HINT = "a policy reads files only under the folders given as inputs; " \
               "`--allow-path DIR` adds a folder that may be read"


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([folder, path]) == folder


def _root(path: str) -> str | None:
    """The real path of a folder named by the caller, or None when it is named inside the current
    folder but a symlink leads it out: a change under review that turns `policies/` into a link to
    `/` must not make the whole file system readable."""
    real, named = os.path.realpath(path), os.path.abspath(path)
    cwd = os.path.realpath(os.getcwd())
    if _inside(named, os.getcwd()) and not _inside(real, cwd):
        return None
    return real


@dataclass(frozen=True)
class Roots:
    """Real paths of the folders files may be read from."""

    folders: tuple[str, ...]

    @classmethod
    def of(cls, inputs: Iterable[str], allowed: Iterable[str] = ()) -> Roots:
        """The folders of `inputs` (a folder itself, a file's parent folder) and the `allowed` folders."""
        named = [p if os.path.isdir(p) else os.path.dirname(p) or "." for p in inputs] + list(allowed)
        return cls(tuple(sorted({root for p in named if (root := _root(p)) is not None})))

    def admits(self, path: str) -> bool:
        real = os.path.realpath(path)
        return any(_inside(real, folder) for folder in self.folders)

    def refusal(self, path: str, span: Span) -> Diagnostic | None:
        """The diagnostic for reading `path` (named at `span`), or None when it lies under a root."""
        if self.admits(path):
            return None
        real = os.path.realpath(path)
        shown = f"`{path}`" + (f" (really `{real}`)" if real != os.path.abspath(path) else "")
        return Diagnostic("load/outside-root", f"{shown} is outside the folders this policy set may read",
                          span, hint=OUTSIDE_HINT)
