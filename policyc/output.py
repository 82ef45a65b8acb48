"""Writes a set of files into a folder all at once: the new folder is built beside the old one
and swapped in by renames, so a failure leaves an existing folder exactly as it was.
A file that holds a private key (the listener's, inlined by a `tls` block) is written readable by
its owner alone (`file_mode`).
`stale_files` says where a folder differs from what would be written (`compile --check`).
`create_files` adds new files to a folder and never replaces one (`init`, `dev-certs`)."""

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


def create_files(folder: str | Path, files: dict[str, str], new_folders: tuple[str, ...] = ()) -> list[Path]:
    """Writes `files` (relative path → text) under `folder` as new files, each with `file_mode`,
    and returns their paths. When any of them, or any of `new_folders`, exists already, raises
    FileExistsError naming every one and writes nothing. Each file is created exclusively, so one
    that appears meanwhile is not replaced either; on any failure the files this call created are
    removed again."""
    root = Path(folder)
    paths = {relative: root / relative for relative in files}
    folders = [root / name for name in new_folders if (root / name).exists() or (root / name).is_symlink()]
    existing = [str(path) for path in folders] + [  # what is in an existing folder goes without saying
        str(path) for path in paths.values()
        if (path.exists() or path.is_symlink()) and not any(f in path.parents for f in folders)]
    if existing:
        raise FileExistsError(", ".join(existing))
    created = []
    try:
        for relative, path in paths.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            text = files[relative]
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, file_mode(text))
            created.append(path)
            with os.fdopen(descriptor, "w", encoding="utf-8") as f:
                f.write(text)
    except BaseException:
        for path in created:
            path.unlink(missing_ok=True)
        raise
    return created
