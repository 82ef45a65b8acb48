"""Files (and ports) someone named, on the command line or in a case file, that cannot be used.

`why(error)` says why in words and on one line: "no such file or directory", not "[Errno 2] …";
"not UTF-8 text", not a codec's message. `with using(path, "write"):` turns such an error on a
file the user named into `Unusable`, "cannot write PATH: why", which the command line reports as
a usage error: one line, exit 2, never the internal error of a bug. `yaml_problem` puts a YAML
error on one line, at its place, instead of its report over several lines.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import yaml


class Unusable(ValueError):
    """A file, folder or port someone named cannot be used; the message names it and says why."""


def why(error: OSError | UnicodeDecodeError) -> str:
    """Why reading, writing or binding failed: the system's reason, or that the text is not UTF-8."""
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 text (byte {error.start} cannot be decoded)"
    if isinstance(error, FileExistsError) and error.filename:
        # What `mkdir(exist_ok=True)` says of a file where a folder must go: "file exists".
        return f"{error.filename} is a file, not a folder"
    return (error.strerror or str(error) or type(error).__name__).lower()


@contextmanager
def using(name: object, doing: str) -> Iterator[None]:
    """Within the block, an OSError or undecodable text is `Unusable`: `cannot {doing} {name}: why`."""
    try:
        yield
    except (OSError, UnicodeDecodeError) as error:
        raise Unusable(f"cannot {doing} {name}: {why(error)}") from None


def yaml_message(error: yaml.YAMLError) -> str:
    """A YAML error's problem, without its place."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem:
        return error.problem
    if isinstance(error, yaml.reader.ReaderError) and isinstance(error.character, int):
        return f"character U+{error.character:04X} is not allowed in YAML"  # a code point
    return str(error).splitlines()[0]


def yaml_problem(path: str, error: yaml.YAMLError) -> str:
    """A YAML error in `path` as `path:line:column: problem` (the place where known)."""
    mark = getattr(error, "problem_mark", None)
    return (f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path) + f": {yaml_message(error)}"
