"""Language-server latency: from an edit (`didChange`) to its diagnostics arriving at the client,
over the protocol, as a ratio of checking the same files in process (`load_and_check`, what
`policyc check` does) measured in the same run. For the example's payments.policy and a generated
policy of `--rules` rules. Prints a table; no assertions.

    .venv/bin/python bench/lsp.py [--rules 2000] [--edits 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lsprotocol import types
from pygls.uris import from_fs_path

sys.path.insert(0, str(Path(__file__).parents[1]))
from bench.interpreter import EXAMPLE  # noqa: E402
from bench.policies import large_set  # noqa: E402
from policyc.pipeline import load_and_check  # noqa: E402
from tests.editor.test_lsp import Client, start, stop  # noqa: E402


def in_process_seconds(path: Path, edits: int) -> float:
    times = []
    for _ in range(edits):
        begin = time.perf_counter()
        load_and_check([str(path)])
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


async def edit_to_diagnostics_seconds(path: Path, edits: int) -> float:
    client = Client()
    await start(client)
    try:
        await client.open(path)
        uri, text, times = from_fs_path(str(path)), path.read_text(), []
        for version in range(2, edits + 2):
            change = types.TextDocumentContentChangeWholeDocument(text=text + f"# edit {version}\n")
            begin = time.perf_counter()
            await client.next_diagnostics(uri, lambda c=change, v=version: client.text_document_did_change(
                types.DidChangeTextDocumentParams(types.VersionedTextDocumentIdentifier(v, uri), [c])))
            times.append(time.perf_counter() - begin)
        return statistics.median(times)
    finally:
        await stop(client)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rules", type=int, default=2000)
    parser.add_argument("--edits", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        generated = Path(folder) / "generated.policy"
        generated.write_text(large_set(args.rules))
        print(f"{'document':<28} {'in process (ms)':>16} {'edit to diagnostics (ms)':>26} {'ratio':>7}")
        for name, path in (("example payments.policy", EXAMPLE / "payments.policy"),
                           (f"generated, {args.rules:,} rules", generated)):
            baseline = in_process_seconds(path, args.edits)
            served = asyncio.run(edit_to_diagnostics_seconds(path, args.edits))
            print(f"{name:<28} {baseline * 1000:>16.1f} {served * 1000:>26.1f} {served / baseline:>7.2f}")


if __name__ == "__main__":
    main()
