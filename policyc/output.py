"""Writes a set of files into a folder all at once: the new folder is built beside the old one
and swapped in by renames, so a failure leaves an existing folder exactly as it was.
A file that holds a private key (the listener's, inlined by a `tls` block) is written readable by
its owner alone (`file_mode`).
`stale_files` says where a folder differs from what would be written (`compile --check`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def file_mode(text: str) -> int:
    """0600 for a file holding a private key, 0644 for any other."""
    return 0o600 if "PRIVATE KEY-----" in text else 0o644


def write_tree(folder: str, files: dict[str, str]) -> None:
    target = Path(folder).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    try:
        for relative, text in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            # No one reads it meanwhile: the staging folder is 0700 until every file is written.
            path.chmod(file_mode(text))
        staging.chmod(0o755)
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rename(target, retired / "tree")
            os.rename(staging, target)
            shutil.rmtree(retired)
        else:
            os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def stale_files(folder: str, files: dict[str, str]) -> list[tuple[str, str]]:
    """Where `folder` differs from `files` (which `write_tree` would make it): each differing
    relative path with why, sorted. Empty when the folder is exactly `files`."""
    root = Path(folder)
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} if root.is_dir() else set()
    stale = []
    for relative in sorted(present | set(files)):
        if relative not in files:
            stale.append((relative, "not written by compile (it would be removed)"))
        elif relative not in present:
            stale.append((relative, "missing"))
        elif (root / relative).read_text(encoding="utf-8", errors="replace") != files[relative]:
            stale.append((relative, "content differs"))
    return stale
