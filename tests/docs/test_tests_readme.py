"""tests/README.md matches the tree: every test file and every folder under tests/ is named in it
(a folder named with its `/` names what it holds), and every file or folder it names exists."""

import re
from pathlib import Path

from policyc.diagnostics import CODES

ROOT = Path(__file__).parents[2]
TESTS = ROOT / "tests"
README = TESTS / "README.md"


def named_paths() -> set[str]:
    """The page's `backticked` words that name a file or folder, relative to tests/ or to the
    repository: those holding a `/`, except absolute paths, options and diagnostic codes."""
    words = re.findall(r"`([^`\s]+)`", README.read_text(encoding="utf-8"))
    return {word for word in words if "/" in word and not word.startswith(("/", "-", "$")) and word not in CODES}


def _exists(name: str) -> bool:
    # `*` stands for any name, and a placeholder such as `<feature>` for any folder.
    pattern = re.sub(r"<[^>]+>", "*", name).rstrip("/")
    return any(any(base.glob(pattern)) for base in (TESTS, ROOT))


def test_every_path_the_page_names_exists():
    missing = sorted(name for name in named_paths() if not _exists(name))
    assert not missing, f"tests/README.md names what does not exist: {missing}"


def _is_named(relative: Path, named: set[str]) -> bool:
    """Whether the page names `relative` (to tests/), a folder above it, or a file in it."""
    shown = {name.removeprefix("tests/") for name in named}
    folders = [f"{'/'.join(relative.parts[:i])}/" for i in range(1, len(relative.parts))]
    return (relative.as_posix() in shown or any(folder in shown for folder in folders)
            or any(name.startswith(f"{relative.as_posix()}/") for name in shown))


def test_every_test_file_and_folder_is_on_the_page():
    named = named_paths()
    tests = [path for path in TESTS.rglob("test_*.py") if "__pycache__" not in path.parts]
    folders = [path for path in TESTS.iterdir() if path.is_dir() and path.name != "__pycache__"]
    missing = [path.relative_to(TESTS).as_posix() for path in sorted(tests + folders)
               if not _is_named(path.relative_to(TESTS), named)]
    assert not missing, f"tests/README.md should say what these prove: {missing}"
