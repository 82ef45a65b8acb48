"""The two sides of `policyc diff`: takes what the user named (files and folders, or git
revisions of some paths) and returns the policy paths to load for each side.

A revision is materialized with `git archive` into a temporary folder, the named paths whole, so
that relative imports, key files and catalogs inside them resolve as in a checkout.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import tempfile
from contextlib import ExitStack


class RevisionError(ValueError):
    """A revision or path git cannot produce."""


def _git(*args: str, cwd: str = ".") -> bytes:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=True)
    except FileNotFoundError:
        raise RevisionError("git is not installed") from None
    except subprocess.CalledProcessError as e:
        raise RevisionError(e.stderr.decode(errors="replace").strip() or f"git {' '.join(args)} failed") from None
    return done.stdout


def materialize(revision: str, paths: list[str], stack: ExitStack) -> list[str]:
    """`paths` (relative to the current folder) as they are at `revision`, in a temporary folder
    that lives as long as `stack`."""
    top = _git("rev-parse", "--show-toplevel").decode().strip()
    inside = [os.path.relpath(os.path.abspath(p), top) for p in paths]
    if any(p == ".." or p.startswith("../") for p in inside):
        raise RevisionError("every path must be inside the git repository")
    archive = _git("archive", "--format=tar", revision, "--", *inside, cwd=top)
    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="policyc-diff-"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return [os.path.join(folder, p) for p in inside]
