"""Coverage-guided fuzzing with atheris (libFuzzer), for long runs outside pytest. Each input is
the bytes of a policy file placed next to the bundled example (so its imports, catalog and key
files resolve); the properties of test_fuzz.py must hold for it. The example's policies seed the
corpus.

    .venv/bin/pip install -e '.[fuzz]'
    .venv/bin/python -m tests.fuzz.atheris_fuzz -runs=100000

Any libFuzzer flag works (-max_total_time=600, -jobs=2, a corpus folder…). A failure stops the run
with the input saved as crash-<hash>; replay it with the same command and the file as argument.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["policyc"]):
    from policyc.pipeline import load_and_check
    from policyc.source import Source

from tests.fuzz.inputs import EXAMPLE
from tests.fuzz.test_fuzz import assert_parse_sound, assert_pipeline_sound

FOLDER = Path(tempfile.mkdtemp(prefix="policyc-atheris-")) / "example"
shutil.copytree(EXAMPLE, FOLDER, ignore=shutil.ignore_patterns("compiled", "*.cases.yaml"))
FUZZED = FOLDER / "fuzzed.policy"


def one_input(data: bytes) -> None:
    assert_parse_sound(Source(str(FUZZED), data.decode("utf-8", "surrogateescape")))
    FUZZED.write_bytes(data)
    assert_pipeline_sound(load_and_check([str(FUZZED)]))


def main() -> None:
    corpus = Path(tempfile.mkdtemp(prefix="policyc-corpus-"))
    for policy in EXAMPLE.glob("*.policy"):
        shutil.copy(policy, corpus)
    args = sys.argv + ([str(corpus)] if not any(Path(a).exists() for a in sys.argv[1:]) else [])
    atheris.Setup(args, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
