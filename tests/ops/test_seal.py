"""`policyc audit seal` and `verify-log`: a chain of signed segment records, and every way a
sealed log can be changed afterwards found and located by file and line: a line edited, deleted,
inserted or moved; a segment missing, added, out of order; a seal record edited, removed or
signed by another key; records cut off the end (found with the chain head kept elsewhere)."""

import os
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from policyc.cli import main
from policyc.ops.seal import GENESIS, LOCATED, dump, read_records

ACCESS_LOG = Path(__file__).parents[1] / "docs" / "access.log"


def run(*args, code=0) -> str:
    result = CliRunner().invoke(main, ["audit", *map(str, args)])
    assert result.exit_code == code, result.output
    return result.stdout


@pytest.fixture
def sealed(tmp_path, monkeypatch):
    """Three segments of a real Envoy's access log, sealed in two runs: (segments, head)."""
    monkeypatch.chdir(tmp_path)
    lines = ACCESS_LOG.read_text().splitlines(keepends=True)
    segments = [tmp_path / f"access.log.{n}" for n in (3, 2, 1)]  # oldest first, as rotated
    for segment, part in zip(segments, (lines[:15], lines[15:30], lines[30:]), strict=True):
        segment.write_text("".join(part))
    run("keygen", "audit.key")
    assert oct(os.stat("audit.key").st_mode & 0o777) == "0o600"
    run("seal", "--key", "audit.key", "--seal", "access.seal", *segments[:2])
    head = run("seal", "--key", "audit.key", "--seal", "access.seal", segments[2]).split()[-1]
    return segments, head


def verify(*segments, code=1, key="audit.key.pub", head=None) -> list[str]:
    extra = ("--head", head) if head else ()
    return run("verify-log", "--key", key, "--seal", "access.seal", *extra, *segments, code=code).splitlines()


def edit(path: Path, change) -> None:
    lines = path.read_text().splitlines(keepends=True)
    change(lines)
    path.write_text("".join(lines))


def test_an_untouched_log_verifies_and_each_record_covers_the_one_before(sealed):
    segments, head = sealed
    assert verify(*segments, code=0, head=head)[-1].endswith(f"chain head {head}")
    records = read_records(Path("access.seal").read_text().splitlines())
    assert [r["previous"] for r in records] == [GENESIS, records[0]["chain"], records[1]["chain"]]
    assert [r["lines"] for r in records] == [15, 15, len(ACCESS_LOG.read_text().splitlines()) - 30]


def test_an_edited_line_is_found_at_its_line(sealed):
    segments, _ = sealed
    edit(segments[1], lambda lines: lines.__setitem__(3, re.sub(r'"status":\d+', '"status":299', lines[3])))
    assert verify(*segments) == ["access.log.2:4: line 4 edited (sealed as line 4)"]


def test_a_deleted_line_is_found_where_it_was(sealed):
    segments, _ = sealed
    edit(segments[0], lambda lines: lines.pop(6))
    assert verify(*segments) == ["access.log.3:7: sealed line 7 deleted before this point"]
    edit(segments[2], lambda lines: lines.pop())
    assert verify(*segments)[-1] == "access.log.1:end: sealed line 8 deleted before this point"


def test_reordered_lines_and_inserted_lines_are_found(sealed):
    segments, _ = sealed
    def swap_and_insert(lines):
        lines[2], lines[3] = lines[3], lines[2]
        lines[10:10] = ['{"status":200,"sub":"forged"}\n'] * 2
    edit(segments[1], swap_and_insert)
    assert verify(*segments) == ["access.log.2:4: sealed line 3 moved here",
                                 "access.log.2:11: lines 11-12 inserted: not sealed"]


def test_a_segment_padded_with_copies_is_located_quickly_and_briefly(sealed):
    """Repeated lines leave a plain diff quadratic: verifying must stay fast, and say enough."""
    segments, _ = sealed
    edit(segments[1], lambda lines: lines.__setitem__(slice(5, 5), lines[:3] * 20_000))
    started = time.monotonic()
    found = verify(*segments)
    assert time.monotonic() - started < 10
    assert found == ["access.log.2:6: lines 6-60005 inserted: not sealed"]
    big = Path("big.log")
    big.write_text("".join(f'{{"n":{n}}}\n' for n in range(3 * LOCATED)))
    run("seal", "--key", "audit.key", "--seal", "big.seal", big)
    edit(big, lambda lines: lines.__setitem__(slice(None, None, 2), [f'{{"n":-{n}}}\n' for n in range(0, 300, 2)]))
    found = run("verify-log", "--key", "audit.key.pub", "--seal", "big.seal", big, code=1).splitlines()
    assert len(found) == LOCATED + 1 and found[-1] == f"big.log: more differences after the first {LOCATED}"


def test_missing_extra_and_reordered_segments_are_named(sealed, tmp_path):
    segments, _ = sealed
    assert verify(segments[0], segments[2]) == ["access.log.2: sealed segment 2 missing"]
    assert verify(segments[1], segments[0], segments[2]) == [
        "access.log.3: is sealed segment 1, given after sealed segment 2: segments out of order"]
    extra = tmp_path / "access.log"
    extra.write_text('{"status":200}\n')
    assert verify(*segments, extra) == ["access.log: not sealed"]
    assert verify(segments[0], extra, *segments[1:]) == ["access.log: not sealed"]
    assert verify() == [f"access.log.{n}: sealed segment {4 - n} missing" for n in (3, 2, 1)]


def test_an_edited_or_removed_seal_record_or_another_key_is_found(sealed):
    segments, head = sealed
    seal = Path("access.seal")
    records = read_records(seal.read_text().splitlines())
    edited = [dict(records[0], lines=14), *records[1:]]
    seal.write_text(dump(edited))
    assert "seal:1: was edited: its chain value does not match its fields" in verify(*segments)
    seal.write_text(dump([records[0], records[2]]))
    assert verify(segments[0], segments[2])[0] == \
        "seal:2: does not follow the record before it (a record was removed or moved)"
    seal.write_text(dump(records[:2]))  # the last record cut off: only the kept head shows it
    assert verify(*segments[:2], code=0)
    assert verify(*segments[:2], head=head)[0].startswith(f"seal: does not end at chain value {head}")
    seal.write_text(dump(records))
    run("keygen", "other.key")
    assert verify(*segments, key="other.key.pub")[0].startswith("seal:1: signature does not verify with key ")


def test_keys_and_seals_that_cannot_be_used_are_one_line_usage_errors(sealed, tmp_path):
    segments, _ = sealed
    result = CliRunner().invoke(main, ["audit", "seal", "--key", "/etc/hostname", "--seal", "access.seal",
                                       str(segments[0])])
    assert result.exit_code == 2 and "outside the folders keys are read from" in result.output
    Path("rsa.pem").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    result = CliRunner().invoke(main, ["audit", "seal", "--key", "rsa.pem", "--seal", "access.seal",
                                       str(segments[0])])
    assert result.exit_code == 2 and "not a PEM private key" in result.output
    result = CliRunner().invoke(main, ["audit", "seal", "--key", "audit.key", "--seal", "access.seal",
                                       str(segments[0])])
    assert result.exit_code == 2 and "access.log.3 is already sealed" in result.output
    Path("access.seal").write_text("not json\n")
    result = CliRunner().invoke(main, ["audit", "verify-log", "--key", "audit.key", "--seal", "access.seal"])
    assert result.exit_code == 2 and result.output.strip() == \
        "policyc: cannot read seal access.seal: line 1 is not a seal record"
    assert "Traceback" not in result.output


def test_keygen_never_replaces_a_key(sealed):
    before = Path("audit.key").read_text()
    result = CliRunner().invoke(main, ["audit", "keygen", "audit.key"])
    assert result.exit_code == 2 and "it would replace audit.key, audit.key.pub" in result.output
    assert Path("audit.key").read_text() == before


def test_a_key_outside_the_folders_is_read_only_with_allow_path(sealed, tmp_path_factory):
    """Keys are confined as a policy's files are: a symlink out of the folder does not lead out."""
    segments, _ = sealed
    elsewhere = tmp_path_factory.mktemp("keys")
    run("keygen", elsewhere / "k")
    Path("linked.pub").symlink_to(elsewhere / "k.pub")
    for key in (elsewhere / "k.pub", "linked.pub"):
        result = CliRunner().invoke(main, ["audit", "verify-log", "--key", str(key), "--seal", "access.seal",
                                           *map(str, segments)])
        assert result.exit_code == 2 and "outside the folders keys are read from" in result.output
    result = CliRunner().invoke(main, ["audit", "verify-log", "--key", "linked.pub", "--seal", "access.seal",
                                       "--allow-path", str(elsewhere), *map(str, segments)])
    assert result.exit_code == 1 and "signature does not verify" in result.output  # read, and another key
