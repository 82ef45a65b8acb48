"""What Envoy 1.40 makes of an HTTP/1.1 request-target under the emitted HCM settings: takes the
target exactly as sent (and the method) and returns the `Target` its filters and the upstream see,
or the `Rejected` answer Envoy gives itself. Every rule here was observed on the real binary
(tests/envoy/test_paths_envoy.py); the HCM settings are normalize_path, merge_slashes and
path_with_escaped_slashes_action REJECT_REQUEST.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Target:
    """The request after the HCM: what RBAC `url_path`, Lua and the upstream agree on."""

    path: str  # normalized, without the query
    query: str | None  # text after the first '?', None when the target had no '?'
    authority: str | None = None  # absolute-form only: the host[:port] that replaces Host

    @property
    def forwarded(self) -> str:
        """The :path Envoy forwards upstream (and Lua's `:path`): path plus the untouched query."""
        return self.path if self.query is None else f"{self.path}?{self.query}"


@dataclass(frozen=True)
class Rejected:
    """A response Envoy sends itself. `reason` is Envoy's response-code detail; for the codec's
    400s it is the likely one of several `http1.*` details (only the status was compared)."""

    status: int
    reason: str


@dataclass(frozen=True)
class Received:
    """What the HTTP/1 codec hands the HCM: the :path value and, for absolute-form, :authority."""

    path_value: str
    authority: str | None


def normalize_target(target: str, method: str = "GET") -> Target | Rejected:
    """The whole pipeline for one request-target; `admit_request` in hosts.py adds the Host checks
    that Envoy runs between the two stages."""
    received = parse_target(target, method)
    if isinstance(received, Rejected):
        return received
    normalized = normalize_path(received.path_value)
    if isinstance(normalized, Rejected):
        return normalized
    return replace(normalized, authority=received.authority)


# ------------------------------------------------------------------ stage 1: the HTTP/1 codec

# The codec splits the request line on runs of SP, HT and CR (observed: "GET \r/a" asks for /a).
_LINE_SPACE = re.compile(r"[ \t\r]+")
_CODEC_400 = Rejected(400, "http1.codec_error")

# The methods the HTTP/1 codec accepts, case-sensitively (http-parser's list without M-SEARCH,
# observed); any other method is a 400.
KNOWN_METHODS = frozenset([
    "DELETE", "GET", "HEAD", "POST", "PUT", "CONNECT", "OPTIONS", "TRACE", "COPY", "LOCK", "MKCOL",
    "MOVE", "PROPFIND", "PROPPATCH", "SEARCH", "UNLOCK", "BIND", "REBIND", "UNBIND", "ACL",
    "REPORT", "MKACTIVITY", "CHECKOUT", "MERGE", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE",
    "PATCH", "PURGE", "MKCALENDAR", "LINK", "UNLINK", "SOURCE",
])


def parse_target(target: str, method: str = "GET", version: str = "HTTP/1.1") -> Received | Rejected:
    """Stage 1: the request line `{method} {target} {version}`, as Envoy's HTTP/1 codec reads it.
    Characters outside ASCII are sent as their UTF-8 bytes (and are always refused). CONNECT
    takes an authority, not a path, and is not modelled (ValueError)."""
    if method == "CONNECT":
        raise ValueError("CONNECT requests are not modelled")
    if method not in KNOWN_METHODS:
        return _CODEC_400  # "get", "QUERY", "FOO": refused before the target is read
    line, newline, _ = target.partition("\n")
    tokens = [token for token in _LINE_SPACE.split(line) if token]
    if newline:
        return _truncated_request_line(tokens, method)
    if len(tokens) != 1:
        # Inner whitespace makes the rest of the line an invalid HTTP version.
        return _CODEC_400
    if not _VERSION.fullmatch(version):
        return _CODEC_400  # "http/1.1", "HTTP/1.10", "HTTP/11"
    parsed = _parse_uri(tokens[0], method)
    if version != "HTTP/1.1" and not isinstance(parsed, Rejected):
        return Rejected(426, "low_version")  # HTTP/1.0 is off (accept_http_10), and so is 2.0 or 3.0
    return parsed


_VERSION = re.compile(r"HTTP/[0-9]\.[0-9]")


def _truncated_request_line(tokens: list[str], method: str) -> Received | Rejected:
    # A LF ends the request line inside the target. One token left means a version-less
    # (HTTP/0.9) request, which Envoy refuses with 426 once the codec accepted its URI.
    if len(tokens) == 1:
        parsed = _parse_uri(tokens[0], method)
        return parsed if isinstance(parsed, Rejected) else Rejected(426, "low_version")
    if len(tokens) == 2 and tokens[1].startswith("HTTP/"):
        # The bytes after the LF would be parsed as header lines: a different request altogether.
        raise ValueError(f"not a request-target: {tokens[0]!r} then a version and a LF")
    return _CODEC_400


def _parse_uri(uri: str, method: str) -> Received | Rejected:
    if not all("!" <= c <= "~" for c in uri):
        return Rejected(400, "http1.invalid_characters")  # controls, DEL, any non-ASCII byte
    if uri.startswith("/"):
        return Received(uri, None)
    if uri.startswith("*") and method == "OPTIONS":
        return Received(uri, None)  # the HCM answers 404 for a non-relative path
    return _parse_absolute(uri)


# scheme "://" authority, then the rest from the first '/' or '?'.
_ABSOLUTE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?]*)(.*)")
_USERINFO = re.compile(r"[A-Za-z0-9\-_.!~*'()%;:&=+$,]*")
_HOST_PORT = re.compile(r"(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]+))?")


def _parse_absolute(uri: str) -> Received | Rejected:
    """absolute-form: the authority (minus userinfo, case and port kept) replaces Host, and the
    rest, or "/" when there is none, becomes :path unchanged."""
    match = _ABSOLUTE.fullmatch(uri)
    if match is None:
        return Rejected(400, "http1.invalid_url")
    scheme, authority, rest = match.groups()
    if scheme.lower() not in ("http", "https"):
        return Rejected(400, "http1.invalid_scheme")
    userinfo, at, host_port = authority.rpartition("@")
    if at and not _USERINFO.fullmatch(userinfo):
        return Rejected(400, "http1.invalid_url")  # includes a second '@'
    host = _HOST_PORT.fullmatch(host_port)
    if host is None or (host["port"] is not None and int(host["port"]) > 65535):
        return Rejected(400, "http1.invalid_url")
    return Received(rest or "/", host_port)


# ------------------------------------------------------------------ stage 2: the HCM


_ESCAPED_SLASH = re.compile(r"%2f|%5c", re.I)


def normalize_path(path_value: str) -> Target | Rejected:
    """Stage 2: the HCM's checks and rewrites of :path, in Envoy's order."""
    if not path_value.startswith("/"):
        return Rejected(404, "absolute_path_rejected")  # e.g. OPTIONS *, http://h?q
    if "#" in path_value:
        return Rejected(400, "path_normalization_failed")  # the query's '#' counts too
    path, question, query = path_value.partition("?")
    if _ESCAPED_SLASH.search(path):
        return Rejected(400, "path_normalization_failed")  # REJECT_REQUEST; the query is exempt
    canonical = canonicalize_path(drop_dot_segment_parameters(path))
    if canonical is None:
        return Rejected(400, "path_normalization_failed")
    normalized = merge_slashes(canonical)
    if DOT_SEGMENT_PARAMETERS.search(normalized):
        return Rejected(400, "dot_segment_parameters")
    return Target(normalized, query if question else None)


# A segment "..;x", ".;x" or "..%3bx" survives Envoy's normalization when its dots were sent as
# %2e ("/a/%2e%2e;/b" is forwarded as "/a/..;/b"), and servlet containers read it as a dot
# segment: the application would serve another path than the one the policy decided on. The
# emitted routes refuse such paths with 400 before any policy filter runs (backends/envoy.py).
DOT_SEGMENT_PARAMETERS = re.compile(r"/\.\.?(;|%3[bB])")


# Any `;` left in a normalized path, or `%3B` in any case, unless the service allows path
# parameters. Servlet containers (Tomcat, Jetty) and Spring drop `;…` from every segment, so
# "/;/admin" and "/admin;x" are served as "/admin" whatever a rule on the path decided. Envoy
# keeps `%3B` encoded; Tomcat and Spring MVC decode it only after splitting off parameters, but
# Spring Security's firewall refuses it and a framework that decodes first reads a parameter, so
# the encoded form is refused alike. The emitted routes refuse such paths with 400 before any
# policy filter runs (backends/envoy.py); `admit_request` in hosts.py does the same.
PATH_PARAMETERS = re.compile(r";|%3[bB]")


def drop_dot_segment_parameters(path: str) -> str:
    """"/a/..;x/b" is "/a/../b": a '/'-delimited segment that is a raw "." or ".." followed by
    ';' loses everything from the ';' on, before canonicalization. Observed on Envoy 1.40 (not in
    Chromium's canonicalizer): "%2e%2e;" and "\\..;" segments are left alone, and the ';' of any
    other segment stays ("/admin;x" is forwarded as is)."""
    return "/".join(_without_dot_parameters(segment) for segment in path.split("/"))


def _without_dot_parameters(segment: str) -> str:
    head, semicolon, _ = segment.partition(";")
    return head if semicolon and head in (".", "..") else segment


# Chromium's path table for the bytes that reach it (0x21-0x7e): %XX of these is decoded ...
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-_~")
# ... and these raw characters are percent-encoded (upper-case hex).
_ENCODED = frozenset('"<>^`{|}')

# Every character a normalized path can hold: the codec admits only 0x21-0x7e, '?' starts the
# query, '#' is refused, '\\' becomes '/', and the characters above are percent-encoded.
PATH_CHARACTERS = frozenset(map(chr, range(0x21, 0x7F))) - set("?#\\") - _ENCODED


def canonicalize_path(path: str) -> str | None:
    """Chromium's url::CanonicalizePath, which Envoy's normalize_path runs: dot segments (also as
    %2e) removed, %XX of unreserved characters decoded, other %XX kept with their hex case, a
    broken '%' kept, '\\' turned into '/', a few characters encoded. None when it fails (%00)."""
    out: list[str] = []
    broken_percent: int | None = None  # where in `out` the last '%' that began no escape went
    i = 0
    while i < len(path):
        dot = _dot_length(path, i)
        if dot:
            i = _handle_dot(path, i, dot, out)
            continue
        char = path[i]
        if char == "%":
            hex_digits = path[i + 1 : i + 3]
            if len(hex_digits) == 2 and all(c in string.hexdigits for c in hex_digits):
                decoded = chr(int(hex_digits, 16))
                if decoded == "\0":
                    return None
                if decoded not in _UNRESERVED:
                    out.extend("%" + hex_digits)
                else:
                    out.append(decoded)
                    if broken_percent is not None:
                        _escape_nested_percent(out, broken_percent, path[i + 3 : i + 4])
                i += 3
                continue
            broken_percent = len(out)
            out.append("%")  # not an escape: kept as is, and what follows is read normally
        elif char == "\\":
            out.append("/")
        elif char in _ENCODED:
            out.extend(f"%{ord(char):02X}")
        else:
            out.append(char)
        i += 1
    return "".join(out)


def _escape_nested_percent(out: list[str], percent: int, next_char: str) -> None:
    """Chromium's guard against double decoding: when a decoded character lands right after a
    broken '%' so that they spell an escape ("%%341" would give "%41"), that '%' becomes "%25"
    ("%2541"). Directly after the '%', the next input character completes the candidate."""
    distance = len(out) - 1 - percent
    if distance == 1:
        candidate = out[-1] + next_char
    elif distance == 2:
        candidate = out[-2] + out[-1]
    else:
        return
    if len(candidate) == 2 and all(c in string.hexdigits for c in candidate):
        out[percent + 1 : percent + 1] = ["2", "5"]


def _dot_length(path: str, i: int) -> int:
    if path[i] == ".":
        return 1
    return 3 if path[i : i + 3] in ("%2e", "%2E") else 0


def _handle_dot(path: str, i: int, dot: int, out: list[str]) -> int:
    """A dot (or %2e) at path[i]; returns where to continue reading."""
    after = i + dot
    if not out or out[-1] != "/":
        out.append(".")  # inside a segment: just a dot (so "a%2e" becomes "a.")
        return after
    if after == len(path) or path[after] in "/\\":
        return min(after + 1, len(path))  # "." segment: dropped with its slash
    second = _dot_length(path, after)
    end = after + second
    if second and (end == len(path) or path[end] in "/\\"):
        _back_up_one_segment(out)  # ".." segment
        return min(end + 1, len(path))
    out.append(".")  # ".x" or "..x": an ordinary segment
    return after


def _back_up_one_segment(out: list[str]) -> None:
    # Chromium drops the previous output segment, even an empty one: "/a//../b" is "/a/b".
    last = len(out) - 1
    if last == 0:
        return  # ".." above the root stays at the root
    j = last - 1
    while out[j] != "/" and j > 0:
        j -= 1
    del out[j + 1 :]


def merge_slashes(path: str) -> str:
    """Envoy's merge_slashes on a canonical path (it starts with '/'), run after canonicalization.
    It keeps one leading and one trailing slash, so a path of only slashes comes out as "//"."""
    if "//" not in path:
        return path
    middle = "/".join(segment for segment in path.split("/") if segment)
    return "/" + middle + ("/" if path.endswith("/") else "")
