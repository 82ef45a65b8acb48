"""Shared paths of the test suite."""

from pathlib import Path

# The decision corpus's signing keys. The policies of each feature folder name them as
# `jwks file "../keys/…"`, outside their own folder, so every load of them allows this folder
# explicitly (`allowed_roots`, `--allow-path`), as a user with shared keys would.
CASE_KEYS = Path(__file__).resolve().parent / "cases" / "keys"
