r"""Long explanations of diagnostic codes, read from `docs/diagnostics.md` (shipped in the wheel).

That page is the one source: each code has a `### \`code\`` section with what it means, a wrong
and a fixed example. `explanation(code)` returns one section's text, `explanations()` all of them.
"""

from __future__ import annotations

import re
from functools import cache

from .resources import resource_dir

_HEADING = re.compile(r"^### `(?P<code>[a-z0-9]+/[a-z0-9-]+)`\n", re.MULTILINE)
_NEXT_SECTION = re.compile(r"^(## |### )", re.MULTILINE)  # policy comments in examples start "# "


@cache
def explanations() -> dict[str, str]:
    """Every documented code → its section, heading included, trailing blank lines removed."""
    text = (resource_dir("docs") / "diagnostics.md").read_text(encoding="utf-8")
    sections = {}
    for heading in _HEADING.finditer(text):
        end = _NEXT_SECTION.search(text, heading.end())
        sections[heading["code"]] = text[heading.start():end.start() if end else len(text)].rstrip() + "\n"
    return sections


def explanation(code: str) -> str | None:
    return explanations().get(code)
