"""Writes a set of files into a folder all at once: the new folder is built beside the old one
and swapped in by renames, so a failure leaves an existing folder exactly as it was."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def write_tree(folder: str, files: dict[str, str]) -> None:
    target = Path(folder).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    try:
        for relative, text in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
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
