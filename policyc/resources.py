"""Where the files shipped beside the code live: `grammar/`, `lua_runtime/`, `docs/diagnostics.md`
and `docs/ci/github-workflow.yml` (which `policyc init` copies).

An installed wheel carries them under `policyc/_data/`; a source checkout has them at the top.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """The folder `name` (`grammar`, `lua_runtime` or `docs`), from the wheel's data or the checkout."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"policyc is installed without its {name}/ folder")


def grammar_text() -> str:
    return (resource_dir("grammar") / "policy.lark").read_text(encoding="utf-8")
