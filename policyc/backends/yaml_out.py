"""The one YAML writer for every emitted file: plain dicts → YAML that Envoy cannot misread.

Every string is double-quoted (a bare `n` or `yes` would turn into a boolean), keys are sorted
and nothing is folded, so the output is deterministic and each scalar means what it says.
"""

from __future__ import annotations

import yaml

# libyaml's emitter when PyYAML has it: the same output, several times faster.
_Base = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_Base):
    def ignore_aliases(self, data) -> bool:  # repeated sub-trees are written out, never as *anchors
        return True


def _quoted_str(dumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')


_Dumper.add_representer(str, _quoted_str)


def dump(data) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=True, allow_unicode=True, width=2**31 - 1,
                     default_flow_style=False)


class _ManifestDumper(_Dumper):
    """Multi-line strings (whole files inside a Kubernetes manifest) as literal `|` blocks."""


def _block_or_quoted(dumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else '"')


_ManifestDumper.add_representer(str, _block_or_quoted)


def dump_manifest(data) -> str:
    return yaml.dump(data, Dumper=_ManifestDumper, sort_keys=False, allow_unicode=True, width=2**31 - 1,
                     default_flow_style=False)
