"""Golden-file comparison shared by the golden tests (`pytest --update-goldens` rewrites them)."""

from pathlib import Path


def assert_golden(path: Path, actual: str, update: bool) -> None:
    if update:
        path.write_text(actual, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing: run pytest --update-goldens and review it"
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"{path} differs from the output (pytest --update-goldens rewrites it)"
