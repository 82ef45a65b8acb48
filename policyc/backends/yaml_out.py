"""The one YAML writer for every emitted file: plain dicts → YAML that Envoy cannot misread.

Every string is double-quoted (a bare `n` or `yes` would turn into a boolean), keys are sorted
and nothing is folded, so the output is deterministic and each scalar means what it says.

Strings are written in printable ASCII alone. Envoy does not read every YAML escape as the spec
says: it loads `\\N` and `\\_`, which PyYAML writes for U+0085 and U+00A0, as a space (its YAML
parser, yaml-cpp, makes them single bytes that are not UTF-8), so a rule on either character
would test another string in Envoy. This writer escapes `"`, `\\`, newline, tab and carriage
return by their letters and every other character outside printable ASCII by its code point, as
`\\xXX`, `\\uXXXX` or `\\UXXXXXXXX`: the forms Envoy was seen to load exactly, for every class
of character (tests/envoy/test_yaml_envoy.py).

The layout is PyYAML's block style, byte for byte, written directly: PyYAML's representer is
pure Python and builds a node per value, which made compiling 10,000 rules take a minute. PyYAML
still writes the rare scalars that are neither strings, integers nor booleans (a float, None).
"""

from __future__ import annotations

from functools import lru_cache

import yaml

# libyaml's emitter when PyYAML has it: the same output, several times faster.
_Base = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_Base):
    def ignore_aliases(self, data) -> bool:  # repeated sub-trees are written out, never as *anchors
        return True


def _quoted_str(dumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')


_Dumper.add_representer(str, _quoted_str)


def _pyyaml(data) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=True, allow_unicode=True, width=2**31 - 1,
                     default_flow_style=False)


def dump(data: dict) -> str:
    if not data:
        return "{}\n"
    lines: list[str] = []
    _container(data, "", lines, {})
    return "\n".join(lines) + "\n"


# Where a mapping or sequence was written before, by its identity and indent: the slice of
# `lines` it took and its own first line (its parent sequence may have rewritten it since).
_Written = dict[tuple[int, str], tuple[int, int, str]]


_CONTAINERS = (dict, list)  # a tuple: `dict | list` would be made anew at every test
# Containers of fewer lines are written again each time: keeping them cost more than it saved.
_KEPT_LINES = 5


def _container(data, indent: str, lines: list[str], written: _Written) -> None:
    """A non-empty mapping or sequence, its lines starting at `indent`. The configs hold the same
    object in many places (a rule's RBAC policy in every route its paths reach): written once per
    indent, then its lines are copied."""
    key = (id(data), indent)  # the object lives as long as `data`'s root, so its id stays its own
    before = written.get(key)
    if before is not None:
        start, end, first = before
        copied = lines[start:end]
        copied[0] = first
        lines += copied
        return
    start = len(lines)
    (_mapping if isinstance(data, dict) else _sequence)(data, indent, lines, written)
    if len(lines) - start >= _KEPT_LINES:
        written[key] = (start, len(lines), lines[start])


def _mapping(data: dict, indent: str, lines: list[str], written: _Written) -> None:
    append, inner = lines.append, indent + "  "
    for key in sorted(data) if len(data) > 1 else data:  # most mappings hold one key
        item = data[key]
        if item and isinstance(item, _CONTAINERS):
            append(f"{indent}{_scalar(key)}:")
            # A sequence in a mapping is not indented.
            _container(item, inner if isinstance(item, dict) else indent, lines, written)
        else:
            append(f"{indent}{_scalar(key)}: {_leaf(item)}")


def _sequence(data: list, indent: str, lines: list[str], written: _Written) -> None:
    append, inner, dash = lines.append, indent + "  ", indent + "- "
    cut = len(dash)
    for item in data:
        if item and isinstance(item, _CONTAINERS):
            start = len(lines)
            _container(item, inner, lines, written)
            lines[start] = dash + lines[start][cut:]  # the first line beside the dash
        else:
            append(dash + _leaf(item))


def _leaf(value) -> str:
    if isinstance(value, _CONTAINERS):  # empty: non-empty ones are laid out by `_container`
        return "{}" if isinstance(value, dict) else "[]"
    return _scalar(value)


@lru_cache(maxsize=65536, typed=True)  # keys and values repeat across rules; True is not 1
def _scalar(value) -> str:
    if isinstance(value, str):
        return '"' + value.translate(_ESCAPES) + '"'
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    # The rest, rare in Envoy configs, exactly as PyYAML writes it inside a one-item list.
    return _pyyaml([value])[2:-1]


class _Escapes(dict):
    """`str.translate`'s table: each character's text inside a double-quoted scalar, made on
    first use. Printable ASCII stands for itself."""

    def __missing__(self, code: int) -> str:
        if 0x20 <= code < 0x7F:
            text = chr(code)
        else:
            text = f"\\x{code:02X}" if code <= 0xFF else f"\\u{code:04X}" if code <= 0xFFFF else f"\\U{code:08X}"
        self[code] = text
        return text


_ESCAPES = _Escapes({ord('"'): '\\"', ord("\\"): "\\\\", ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r"})


class _ManifestDumper(_Dumper):
    """Multi-line strings (whole files inside a Kubernetes manifest) as literal `|` blocks."""


def _block_or_quoted(dumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else '"')


_ManifestDumper.add_representer(str, _block_or_quoted)


def dump_manifest(data) -> str:
    return yaml.dump(data, Dumper=_ManifestDumper, sort_keys=False, allow_unicode=True, width=2**31 - 1,
                     default_flow_style=False)
