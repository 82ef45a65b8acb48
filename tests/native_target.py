"""The native target in the suites that run compiled policies in a real Envoy: the library built
once per session from native_runtime/ (`native_library_dir` in tests/conftest.py), put on the
module search path of the Envoys such a suite starts as processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from policyc.backends.envoy import NATIVE_SEARCH_PATH


@contextmanager
def native_search_path(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Inside, Envoys started as processes find the native library; yields whether the native
    target runs: not where the library cannot be built outside CI (in CI that fails the run)."""
    try:
        folder = request.getfixturevalue("native_library_dir")
    except pytest.skip.Exception:
        yield False
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(NATIVE_SEARCH_PATH, str(folder))
        yield True
