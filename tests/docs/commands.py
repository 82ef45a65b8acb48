"""Commands shown in the documentation, run as shown (the convention is in tests/README.md,
*Commands in the documentation*):

- a ```console block holds commands after a `$ ` prompt, each followed by the output it prints
  (stdout and stderr, as a terminal shows them), if the block shows any: a command shown with
  output may exit 0, 1 or 4 (not 2, usage, nor 3, internal), one shown without must exit 0;
- a ```sh block holds commands only, one a line: each must exit 0;
- `<!-- doctest: ... -->` comments before a block prepare it (`setup`), leave a command out with
  the reason (`not run`), or tie a block that shows no command to the file it is cut from
  (`excerpt of`).

Each document's commands run in order, in one scratch folder holding a copy of the bundled example
at its repository path, with `policyc` on PATH running this checkout. What must vary between runs
(hashes, times, temporary paths) is normalized here, in `NORMALIZATIONS`, and nowhere else.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# What the scratch folder holds, at the same paths as in the repository.
COPIED = ["envoy_configs/examples/backstage", "envoy_configs/examples/templates", "envoy_configs/examples/grants"]
# Absolute folders the documents write to, kept inside the scratch folder (and shown as written).
SANDBOXED = ["/etc/policyc"]
COMMAND_TIMEOUT_S = 60
SHELL_LANGUAGES = {"sh", "shell", "bash"}
PROMPT = "$ "

# Differences allowed between the output shown and the output of a run; applied to both sides.
NORMALIZATIONS = [
    # A chain value of a log seal: a digest over log lines and a key made for the run.
    (re.compile(r"\b[0-9a-f]{64}\b"), "<digest>"),
    # A W3C trace id and Envoy's request id: new for every request.
    (re.compile(r"\b[0-9a-f]{32}\b"), "<trace id>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<request id>"),
    # A policy version: a hash of the compiled configuration, new with any change to the example.
    (re.compile(r"\b[0-9a-f]{16}\b"), "<hash>"),
    # A time: when a request was logged.
    (re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?"), "<time>"),
    # A temporary folder, such as the one a git revision is unpacked into (a document shows /tmp).
    (re.compile(rf"(?:/tmp|{re.escape(tempfile.gettempdir())})/[^\s/'\"`]+"), "<tmp>"),
]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)(?P=fence)"
                    r"[ \t]*$", re.MULTILINE | re.DOTALL)
_DIRECTIVE = re.compile(r"<!--\s*doctest:\s*(?P<text>.*?)\s*-->", re.DOTALL)
_NOT_RUN = re.compile(r"not run `(?P<command>[^`]+)`: (?P<reason>\S.*)", re.DOTALL)
_EXCERPT = re.compile(r"excerpt of (?P<path>\S+)")


class DocumentError(ValueError):
    """A document that breaks the convention."""


@dataclass
class Command:
    text: str  # as shown, without the prompt; continued lines keep their `\` and line break
    line: int
    expected: str | None  # the output shown under it; None when the block shows none
    not_run: str | None = None  # why it is not run


@dataclass
class Block:
    line: int
    body: str
    setup: list[str] = field(default_factory=list)
    excerpt_of: str | None = None
    commands: list[Command] = field(default_factory=list)


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _commands(lines: list[str], first_line: int, console: bool) -> list[Command]:
    """A console block's prompted commands and their output, or a shell block's command lines."""
    commands: list[Command] = []
    output: list[list[str]] = []
    index = 0
    while index < len(lines):
        line, number = lines[index], first_line + index
        index += 1
        if console and not line.startswith(PROMPT):
            if not commands and line.strip():
                raise DocumentError(f"line {number}: output before the first `{PROMPT}` prompt")
            if commands:
                output[-1].append(line)
            continue
        if not console and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if not console and line.startswith(PROMPT):
            raise DocumentError(f"line {number}: a prompt in a shell block (commands with output go in ```console)")
        text = [line.removeprefix(PROMPT) if console else line]
        while text[-1].endswith("\\") and index < len(lines):
            text.append(lines[index])
            index += 1
        commands.append(Command("\n".join(text), number, None))
        output.append([])
    for command, shown in zip(commands, output, strict=True):
        command.expected = "\n".join(shown).rstrip() or None
    return commands


def _apply(directive: str, block: Block, where: str) -> None:
    if directive.startswith("setup\n"):
        block.setup.append(directive.removeprefix("setup\n"))
    elif match := _NOT_RUN.fullmatch(directive):
        marked = [c for c in block.commands if c.text.startswith(match["command"])]
        if not marked:
            raise DocumentError(f"{where}: no command of the next block starts with `{match['command']}`")
        for command in marked:
            command.not_run = " ".join(match["reason"].split())
    elif match := _EXCERPT.fullmatch(directive):
        block.excerpt_of = match["path"]
    else:
        raise DocumentError(f"{where}: unknown directive `doctest: {directive.splitlines()[0]}`")


def _directives(text: str, start: int, end: int) -> list[tuple[str, int]]:
    """The directives between two blocks, which must stand right before the second one."""
    found = list(_DIRECTIVE.finditer(text, start, end))
    if found and _DIRECTIVE.sub("", text[found[0].start():end]).strip():
        raise DocumentError(f"line {_line_of(text, found[0].start())}: a directive must stand right before "
                            "its block")
    return [(match["text"], _line_of(text, match.start())) for match in found]


def parse(text: str) -> list[Block]:
    """The document's blocks that run or are checked, in order, with their directives applied."""
    blocks, position = [], 0
    for fence in _FENCE.finditer(text):
        directives = _directives(text, position, fence.start())
        position = fence.end()
        indent = len(fence["indent"])
        lines = [line[indent:] for line in fence["body"].splitlines()]
        language = fence["info"].strip().split(" ")[0]
        block = Block(_line_of(text, fence.start()), "\n".join(lines))
        if language in SHELL_LANGUAGES or language == "console":
            block.commands = _commands(lines, block.line + 1, console=language == "console")
        elif any(line.startswith(PROMPT) for line in lines):
            # A command shown in a block of another kind would escape the tests.
            raise DocumentError(f"line {block.line}: a prompt in a ```{language} block: commands go in ```console")
        for directive, line in directives:
            _apply(directive, block, f"line {line}")
        if block.commands or block.excerpt_of or block.setup:
            blocks.append(block)
    if trailing := _DIRECTIVE.search(text, position):
        raise DocumentError(f"line {_line_of(text, trailing.start())}: a directive with no block after it")
    return blocks


def normalize(output: str, work: Path) -> str:
    """`output` with what may vary replaced by stand-ins, and trailing blanks dropped."""
    for folder in SANDBOXED:
        output = output.replace(f"{work}{folder}", folder)
    output = output.replace(str(work), "<tmp>")
    for pattern, stand_in in NORMALIZATIONS:
        output = pattern.sub(stand_in, output)
    return "\n".join(line.rstrip() for line in output.splitlines()).rstrip("\n")


class Session:
    """A document's scratch folder and the shell its commands run in, one after the other."""

    def __init__(self, work: Path):
        self.work = work
        for path in COPIED:
            shutil.copytree(ROOT / path, work / path)
        bin_dir = work / ".bin"
        bin_dir.mkdir()
        # What `pip install` puts on PATH as `policyc`, importing this checkout.
        launcher = bin_dir / "policyc"
        launcher.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                            "from policyc.cli import main\nmain()\n")
        launcher.chmod(0o755)
        self.env = {
            "PATH": os.pathsep.join([str(bin_dir), os.path.dirname(sys.executable), os.environ["PATH"]]),
            "HOME": str(work / ".home"), "XDG_STATE_HOME": str(work / ".state"), "REPO": str(ROOT),
            "LC_ALL": "C.UTF-8", "TZ": "UTC", "TERM": "dumb", "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "docs", "GIT_AUTHOR_EMAIL": "docs@example.com",
            "GIT_COMMITTER_NAME": "docs", "GIT_COMMITTER_EMAIL": "docs@example.com",
        }

    def run(self, script: str, *flags: str) -> tuple[int, str]:
        """Exit status and output (stdout and stderr, in the order written) of `script` in bash."""
        for folder in SANDBOXED:
            script = script.replace(folder, f"{self.work}{folder}")
        # A session of its own, so that a timeout stops whatever the command started too.
        with subprocess.Popen(["bash", "-o", "pipefail", *flags, "-c", script], cwd=self.work, env=self.env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True) as process:
            try:
                output, _ = process.communicate(timeout=COMMAND_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                return 124, f"(stopped after {COMMAND_TIMEOUT_S} s)\n{process.communicate()[0]}"
        return process.returncode, output


def _check_command(session: Session, command: Command, where: str) -> str | None:
    """What is wrong with the command's run, if anything."""
    status, output = session.run(command.text)
    shown = f"{where}: `{command.text}`"
    if command.expected is None:
        return None if status == 0 else f"{shown} exited {status}, and shows no output to explain it:\n{output}"
    # 1 is policyc's answer for failing policies, cases or gates, and 4 who-can's for a request the
    # proxy refuses, which a document may show; 2 (usage) and 3 (internal) never are.
    if status in (2, 3) or status > 4:
        return f"{shown} exited {status}:\n{output}"
    expected, got = normalize(command.expected, session.work), normalize(output, session.work)
    if expected == got:
        return None
    diff = difflib.unified_diff(expected.splitlines(), got.splitlines(), "shown", "printed", lineterm="")
    return f"{shown} printed otherwise (exit {status}):\n" + "\n".join(diff)


def run_document(text: str, name: str, work: Path) -> list[str]:
    """Runs a document's commands in order, in the scratch folder `work`; returns what went wrong,
    each failure located as `name:line`."""
    session, failures = Session(work), []
    try:
        blocks = parse(text)
    except DocumentError as e:
        return [f"{name}: {e}"]
    for block in blocks:
        for script in block.setup:
            status, output = session.run(script, "-e")
            if status != 0:
                failures.append(f"{name}:{block.line}: setup exited {status}:\n{output}")
        if block.excerpt_of and block.body not in (ROOT / block.excerpt_of).read_text(encoding="utf-8"):
            failures.append(f"{name}:{block.line}: the block is not an excerpt of {block.excerpt_of}")
        for command in block.commands:
            if command.not_run is None and (problem := _check_command(session, command, f"{name}:{command.line}")):
                failures.append(problem)
    return failures


def not_run(text: str) -> list[Command]:
    """A document's commands left out, each with the reason it gives."""
    return [c for block in parse(text) for c in block.commands if c.not_run]
