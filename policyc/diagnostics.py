"""Diagnostics as data: every stage returns `Diagnostic`s; this module renders them as text, JSON,
GitHub workflow commands or SARIF 2.1.0.

`CODES` is the one table of diagnostic codes, each with a one-line description; the long
explanations with examples are in `docs/diagnostics.md` (`policyc.explain` reads them).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from urllib.parse import quote

from .source import Source, Span


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


CODES: dict[str, str] = {
    # syntax
    "parse/unexpected-token": "the text does not follow the grammar at this point",
    "parse/unexpected-end": "the file ends in the middle of a construct",
    "parse/unexpected-character": "a character that starts no token of the language",
    "parse/bad-string": "a string literal with an invalid escape",
    "parse/lone-surrogate": "a string literal with half of a UTF-16 surrogate pair",
    "parse/too-deep": "a condition nested deeper than the parser accepts",
    "parse/file-too-large": "a policy file larger than the compiler accepts",
    # loading
    "load/file-not-found": "an input or imported policy file does not exist or cannot be read",
    "load/not-utf8": "a policy file that is not valid UTF-8",
    "load/import-cycle": "files that import each other in a cycle",
    "load/outside-root": "a file a policy names (import, `jwks file`, `ca file`, `cert file`, `key file`, "
                         "`catalog`) outside the folders the policy set may read",
    # names
    "check/unknown-issuer": "a reference to an issuer that no loaded file declares",
    "check/unknown-condition": "a reference to a condition that no loaded file declares",
    "check/unknown-entity": "a catalog entity that the catalog does not contain",
    "check/unknown-group": "a `member` group that the catalog does not contain",
    "check/duplicate-issuer": "two issuers with one name",
    "check/duplicate-issuer-url": "two issuers with one `url`: tokens could not be told apart",
    "check/duplicate-condition": "two conditions with one name",
    "check/duplicate-service": "two services with one name",
    "check/duplicate-rule": "two rules with one name in a service",
    "check/duplicate-host": "a host listed by two services, or twice by one",
    "check/duplicate-setting": "a setting given twice in one block",
    "check/condition-cycle": "conditions that refer to each other in a cycle",
    "check/reserved-name": "a name that a keyword of the language already uses",
    "check/too-deep": "a rule or condition nested too deep once the conditions it names are written out",
    "check/too-many-tests": "a rule or condition with too many tests once the conditions it names are written out",
    # values
    "check/bad-method": "a method that is not an upper-case HTTP token",
    "check/bad-path": "a path literal that the proxy's normalization would never produce",
    "check/bad-glob": "a malformed path glob",
    "check/bad-cidr": "a malformed IPv4 or IPv6 CIDR",
    "check/bad-header-name": "a header name that is not a lower-case HTTP token",
    "check/proxy-header": "a rule on a header the proxy refuses, removes, adds or rewrites before the rules",
    "check/bad-host": "a malformed host in a service's `hosts`",
    "check/bad-upstream": "an upstream that is not `host:port`",
    "check/bad-entity-ref": "a malformed catalog entity reference",
    "check/bad-url": "an issuer `url` or `jwks` that is not an absolute https (or loopback http) URL",
    "check/bad-name": "a service or rule name with characters outside [A-Za-z0-9_.-]",
    "check/type-mismatch": "an operator used on a value it does not apply to",
    "check/empty-list": "an empty list, which could never match",
    "check/bad-grpc-name": "a gRPC service or method name that is not `pkg.Service` or `pkg.Service/Method`",
    # settings
    "check/missing-setting": "a required setting is absent (issuer `url`/`jwks`, service `hosts`/`upstream`)",
    "check/member-without-catalog": "`member` used with no issuer marked `catalog users` or no catalog",
    # files
    "check/missing-key-file": "a `jwks file` that does not exist or is not a valid JWKS",
    "check/missing-catalog": "a `catalog` folder that does not exist",
    # client certificates
    "check/duplicate-trust": "two `trust` blocks with one name",
    "check/unknown-trust": "`peer trusted NAME` naming no declared `trust`",
    "check/ambiguous-trust": "`peer trusted NAME` while several `trust` CAs are declared: which one verified "
                             "cannot be told",
    "check/peer-without-trust": "a peer atom with no `trust` declared: no client certificate would be asked for",
    "check/trust-needs-tls": "a `trust` without a `tls` block: client certificates need a TLS listener",
    "check/bad-certificate": "a `ca file`, `cert file` or `key file` that cannot be read, is not PEM or not a CA, "
                             "holds a private key, or a key that is not the certificate's",
    # catalog
    "catalog/bad-yaml": "a catalog file that is not valid YAML",
    "catalog/bad-entity": "a catalog entity without the fields its kind requires",
    "catalog/duplicate-entity": "two catalog entities with one ref",
    "catalog/dangling-ref": "a catalog relation to an entity that does not exist",
    "catalog/group-cycle": "groups that are each other's parents",
    "catalog/unreadable-file": "a file or folder in a catalog folder that cannot be read",
    "catalog/bad-annotation": "a `policyc.dev/…` annotation that makes no service",
    # templates
    "template/unknown": "a `use` of a template that no loaded file declares",
    "template/duplicate": "two templates with one name",
    "template/used-twice": "a service that uses one template twice",
    "template/missing-argument": "a `use` without an argument for a parameter that has no default",
    "template/unknown-argument": "a `use` with an argument the template has no parameter for",
    "template/duplicate-argument": "a `use` that gives one argument twice",
    "template/bad-argument": "an argument (or a default) that is not of its parameter's type",
    "template/duplicate-parameter": "a template that declares one parameter twice",
    "template/unknown-parameter": "a `$parameter` that its template does not declare",
    "template/parameter-type": "a `$parameter` standing where a value of another type is needed",
    "template/parameter-outside": "a `$parameter` in a service's own rule or a condition, outside any template",
    "template/weakens-locked": "a service that weakens a rule its template marks `locked`",
    "template/unused": "a template that no service uses",
    # grants
    "grant/missing-setting": "a grant without its `service`, `who`, `what`, `from`, `until` or `reason`",
    "grant/no-approver": "a grant nobody approved",
    "grant/self-approved": "a grant approved by its grantee",
    "grant/bad-time": "a `from` or `until` that is no RFC 3339 time in whole seconds with a zone",
    "grant/empty-window": "a grant whose `until` is not after its `from`",
    "grant/window-too-long": "a window longer than the policy set allows",
    "grant/bad-duration": "a `max window` that is no duration",
    "grant/expired": "a grant whose window ended before the check ran, still in the files",
    "grant/overlap": "two grants of one service to the same grantee whose windows overlap",
    "grant/duplicate": "two grants with one name",
    "grant/condition-ref": "a grant that names a `condition` instead of writing it out",
    "grant/unknown-service": "a grant for a service that no loaded file declares",
    "grant/unsigned": "a grant without a `signature` in a policy set whose `grants` block names a key",
    "grant/bad-signature": "a grant whose signature does not verify with the policy set's grants key",
    "grant/bad-key": "a grants `key file` that cannot be read, or is no Ed25519 public key in PEM",
    "template/unused-parameter": "a template parameter that no rule of the template uses",
    # backends
    "rbac/unsupported": "a rule that native RBAC cannot express, compiled with `--target rbac`",
    # warnings
    "check/anonymous-allow": "an `allow` rule that can match a request without a token, not marked `public`",
    "check/public-needs-no-token": "a rule marked `public` that can never match an anonymous request",
    "check/grpc-needs-http2": "gRPC rules on a service whose upstream speaks HTTP/1.1",
    "check/anonymous-reflection": "an `allow` rule that lets callers without a token reach gRPC server reflection",
    "check/token-without-issuer": "a token test while no issuer is declared: no token is ever accepted, so it is "
                                  "never true",
}


MESSAGE_LIMIT = 400  # characters of a message or hint


def bounded(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """`text`, or its start and end around a `…` when it is longer than `limit`."""
    if len(text) <= limit:
        return text
    tail = limit // 4
    return text[:limit - tail - 3] + " … " + text[-tail:]


@dataclass(frozen=True)
class Diagnostic:
    """One finding about the input, located by `span`."""

    code: str
    message: str
    span: Span
    severity: Severity = Severity.ERROR
    hint: str | None = None
    notes: tuple[tuple[str, Span], ...] = field(default=())

    def __post_init__(self) -> None:
        assert self.code in CODES, f"unregistered diagnostic code {self.code}"
        # Messages quote values from the input (a token, a path), which can be megabytes long;
        # every renderer and the editor show them, so they are bounded once, here.
        object.__setattr__(self, "message", bounded(self.message))
        if self.hint is not None:
            object.__setattr__(self, "hint", bounded(self.hint))

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR


class PolicycError(Exception):
    """Raised by the public API when the input has errors; carries every diagnostic."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = sort_diagnostics(diagnostics)
        super().__init__("\n".join(f"{d.span}: {d.code}: {d.message}" for d in self.diagnostics))


def sort_diagnostics(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    unique = dict.fromkeys(diagnostics)
    return sorted(unique, key=lambda d: (*d.span.sort_key, d.code, d.message))


def did_you_mean(name: str, known) -> str | None:
    """A hint naming the known name closest to a misspelt one, if any is close."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"did you mean `{close[0]}`?" if close else None


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.is_error for d in diagnostics)


SNIPPET_WIDTH = 120  # characters of a source line shown around a caret
FOREIGN_SNIPPET_WIDTH = 40  # the same, in a file that is not of the kind read (`Source.foreign`)


# Control characters shown as visible stand-ins of one column each (U+2400's pictures, U+FFFD for
# C1): a file can hold an escape sequence, and a terminal must not run it.
_VISIBLE = {c: chr(0x2400 + c) for c in range(0x20)} | {0x7F: "\u2421"} | {c: "\ufffd" for c in range(0x80, 0xA0)}


def visible(text: str) -> str:
    """`text` with every control character replaced by a visible character of one column."""
    return text.translate(_VISIBLE)


def _caret_block(span: Span, sources: Mapping[str, Source]) -> list[str]:
    source = sources.get(span.path)
    if source is None:
        return []
    text = source.line_text(span.line).replace("\t", " ")
    width = (span.end_column - span.column) if span.end_line == span.line else len(text) - span.column + 1
    # A window of the line around the caret, never the whole of a long line: a minified or
    # binary file can be one line of megabytes, and a file named by mistake should not be echoed.
    snippet = FOREIGN_SNIPPET_WIDTH if source.foreign else SNIPPET_WIDTH
    start = max(0, min(span.column - 1 - snippet // 2, len(text) - snippet))
    end = min(len(text), start + snippet)
    shown = ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")
    indent = span.column - 1 - start + (1 if start else 0)
    width = min(width, max(end - (span.column - 1), 1))
    gutter = " " * len(str(span.line))
    return [
        f"{gutter} |",
        f"{span.line} | {visible(shown)}",
        f"{gutter} | {' ' * indent}{'^' * max(width, 1)}",
    ]


def render_text(diagnostic: Diagnostic, sources: Mapping[str, Source]) -> str:
    """`file:line:col: error[CODE]: message`, the source line, a caret under the span, hint and notes."""
    d = diagnostic
    lines = [visible(f"{d.span}: {d.severity.value}[{d.code}]: {d.message}")]
    lines += _caret_block(d.span, sources)
    for text, span in d.notes:
        lines.append(visible(f"  = note: {text} at {span}"))
    if d.hint:
        lines.append(visible(f"  = hint: {d.hint}"))
    return "\n".join(lines)


def to_json(diagnostic: Diagnostic) -> dict:
    d = diagnostic
    return {
        "code": d.code,
        "severity": d.severity.value,
        "message": d.message,
        "file": d.span.path,
        "line": d.span.line,
        "column": d.span.column,
        "end_line": d.span.end_line,
        "end_column": d.span.end_column,
        "hint": d.hint,
        "notes": [{"message": text, "file": s.path, "line": s.line, "column": s.column} for text, s in d.notes],
    }


def render_json(diagnostics: Iterable[Diagnostic]) -> str:
    return json.dumps([to_json(d) for d in diagnostics], indent=2)


def _github_escape(text: str, in_property: bool = False) -> str:
    """Escape as GitHub's workflow-command parser expects (properties also escape `:` and `,`)."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    text = visible(text)  # the log renders ANSI sequences
    return text.replace(":", "%3A").replace(",", "%2C") if in_property else text


def render_github(diagnostics: Iterable[Diagnostic]) -> str:
    """One `::error file=…,line=…::message` workflow command per diagnostic: GitHub Actions shows
    each as an annotation on the line it names."""
    lines = []
    for d in diagnostics:
        s = d.span
        properties = {"file": s.path, "line": s.line, "col": s.column, "endLine": s.end_line,
                      "endColumn": s.end_column, "title": d.code}
        fields = ",".join(f"{key}={_github_escape(str(value), True)}" for key, value in properties.items())
        message = d.message + (f"\nhint: {d.hint}" if d.hint else "")
        lines.append(f"::{d.severity.value} {fields}::{_github_escape(message)}")
    return "\n".join(lines)


SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def _artifact_uri(path: str) -> str:
    """A file URI for an absolute path; a relative reference (what code scanning maps to the
    repository) for a relative one."""
    return Path(path).as_uri() if Path(path).is_absolute() else quote(Path(path).as_posix())


def _sarif_location(span: Span, message: str | None = None) -> dict:
    location = {"physicalLocation": {
        "artifactLocation": {"uri": _artifact_uri(span.path)},
        "region": {"startLine": span.line, "startColumn": span.column,
                   "endLine": span.end_line, "endColumn": span.end_column},
    }}
    if message:
        location["message"] = {"text": message}
    return location


def render_sarif(diagnostics: Iterable[Diagnostic], version: str, help_texts: Mapping[str, str]) -> str:
    """A SARIF 2.1.0 log with one run: every code as a rule (its explanation as the rule's help),
    every diagnostic as a result.

    Columns count Unicode code points, as the spans do (`columnKind`), so a consumer that maps
    them to UTF-16 lands on the same character.
    """
    codes = list(CODES)
    results = []
    for d in diagnostics:
        result = {
            "ruleId": d.code,
            "ruleIndex": codes.index(d.code),
            "level": d.severity.value,
            "message": {"text": d.message + (f" (hint: {d.hint})" if d.hint else "")},
            "locations": [_sarif_location(d.span)],
        }
        if d.notes:
            result["relatedLocations"] = [dict(_sarif_location(span, text), id=i)
                                          for i, (text, span) in enumerate(d.notes)]
        results.append(result)
    rules = [{"id": code, "shortDescription": {"text": text},
              "help": {"text": help_texts.get(code, text), "markdown": help_texts.get(code, text)}}
             for code, text in CODES.items()]
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "policyc", "version": version, "rules": rules}},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    }
    return json.dumps(log, indent=2, ensure_ascii=False)


def summary_line(diagnostics: Iterable[Diagnostic]) -> str:
    diagnostics = list(diagnostics)
    errors = sum(d.is_error for d in diagnostics)
    warnings = len(diagnostics) - errors
    return f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"
