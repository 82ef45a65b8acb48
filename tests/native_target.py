"""The native target in the suites that run compiled policies in a real Envoy: the library built
once per session (`native_library_dir` in tests/conftest.py) and put on the module search path of
the Envoys a suite starts as processes.

`READS_COMPILED_CONFIG` says whether native_runtime/ reads what `--target native` emits (version
1 of the format in backends/native.py). While it is False those suites leave the native target
out, and `envoy/test_compile.py` checks that the runtime indeed refuses that config, so the flag
cannot stay False once the runtime reads it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from policyc.backends.envoy import NATIVE_SEARCH_PATH

READS_COMPILED_CONFIG = False


@contextmanager
def native_search_path(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Inside, Envoys started as processes find the native library; yields whether the native
    target runs (the runtime reads the compiled config)."""
    if not READS_COMPILED_CONFIG:
        yield False
        return
    folder = request.getfixturevalue("native_library_dir")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(NATIVE_SEARCH_PATH, str(folder))
        yield True
