"""Reads the entities of a running Backstage catalog over its REST API.

`CatalogClient(url, token).fetch()` pages through `GET {url}/entities/by-query` (cursor paging,
`Authorization: Bearer` with a service token) and returns the entities as `catalog.LiveEntities`,
which `load_and_check` checks as it checks catalog files. It asks only for the kinds and fields a
policy can use. A page fetched before is asked for with `If-None-Match` when the catalog gave it an
`ETag`, and a 304 reuses it. Anything short of a whole, well-formed answer within the limits raises
`CatalogError`, one line naming the catalog and why: an unreachable catalog, an HTTP error, a
redirect (never followed: it would carry the token elsewhere), a body too large, too many pages,
a time-out, or JSON that is not a by-query answer. The token never appears in a message.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http import HTTPStatus
from http.client import HTTPException

from ..catalog import KINDS, LiveEntities

# Only what the catalog stage reads: the rest of an entity (descriptions, relations Backstage
# computed) would only make the pages larger. Annotations and the lifecycle make services
# (`catalog_services`); Backstage's `fields` cannot name one annotation, as its keys hold dots.
FIELDS = ("apiVersion", "kind", "metadata.name", "metadata.namespace", "metadata.annotations", "spec.memberOf",
          "spec.members", "spec.parent", "spec.children", "spec.owner", "spec.lifecycle")
TOKEN_ENV = "POLICYC_CATALOG_TOKEN"


@dataclass(frozen=True)
class Limits:
    timeout: float = 10.0  # seconds to connect, and between two reads of an answer
    deadline: float = 60.0  # seconds for a whole fetch, every page
    page_size: int = 500
    max_pages: int = 400
    max_page_bytes: int = 32 * 1024 * 1024


class CatalogError(Exception):
    """The catalog could not be read; the message is one line, without the token."""


def catalog_url(text: str) -> str:
    """The catalog's base URL (`https://backstage.example.com/api/catalog`), without a trailing `/`;
    ValueError, with the reason, for one policyc will not use."""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("is not an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"holds credentials: give the token in ${TOKEN_ENV} or --catalog-token-file")
    if parts.query or parts.fragment:
        raise ValueError("has a query or a fragment: give the catalog's base URL, e.g. http://host:7007/api/catalog")
    return text.rstrip("/")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # urllib would resend the Authorization header
        return None


class CatalogClient:
    """A Backstage catalog at `url` (see `catalog_url`), read with `token` when one is given."""

    def __init__(self, url: str, token: str | None = None, limits: Limits | None = None):
        self.url, self._token, self.limits = catalog_url(url), token, limits or Limits()
        parts = urllib.parse.urlsplit(self.url)
        if token and parts.scheme == "http" and not _loopback(parts.hostname):
            raise ValueError("is plain http: a token is sent only over https, or to a loopback address")
        # No proxies from the environment: the token goes to the catalog and nowhere else.
        self._opener = urllib.request.build_opener(_NoRedirect, urllib.request.ProxyHandler({}))
        self._pages: dict[str, tuple[str, bytes]] = {}  # page URL → (ETag, body) of the last fetch

    def fetch(self) -> LiveEntities:
        deadline = time.monotonic() + self.limits.deadline
        fields = [("fields", ",".join(FIELDS)), ("limit", str(self.limits.page_size))]
        query = [*(("filter", f"kind={kind.lower()}") for kind in sorted(KINDS)), *fields]
        entities, cursors, pages = [], set(), {}
        for _ in range(self.limits.max_pages):
            page_url = f"{self.url}/entities/by-query?{urllib.parse.urlencode(query)}"
            body, etag = self._get(page_url, deadline)
            if etag:
                pages[page_url] = (etag, body)
            items, cursor = self._parse(body)
            entities += items
            if cursor is None:
                self._pages = pages
                return LiveEntities(self.url, tuple(entities))
            if cursor in cursors:
                raise CatalogError(f"catalog {self.url}: its pages loop (a cursor came back)")
            cursors.add(cursor)
            query = [("cursor", cursor), *fields]  # the cursor holds the filter and the order
        raise CatalogError(f"catalog {self.url}: more than {self.limits.max_pages} pages of "
                           f"{self.limits.page_size} entities")

    def _get(self, page_url: str, deadline: float) -> tuple[bytes, str | None]:
        """A page's body and ETag; the body kept from the last fetch when the catalog answers 304."""
        request = urllib.request.Request(page_url, headers={"Accept": "application/json"})
        if self._token:
            request.add_unredirected_header("Authorization", f"Bearer {self._token}")
        cached = self._pages.get(page_url)
        if cached:
            request.add_header("If-None-Match", cached[0])
        try:
            with self._opener.open(request, timeout=self._left(deadline)) as response:
                return self._read(response, deadline), response.headers.get("ETag")
        except urllib.error.HTTPError as error:
            if error.code == 304 and cached:
                return cached[1], cached[0]
            hint = " (is the token right?)" if error.code in (401, 403) else ""
            raise CatalogError(f"catalog {self.url}: HTTP {_status(error.code)}{hint}") from None
        except (urllib.error.URLError, OSError, HTTPException) as error:
            reason = getattr(error, "reason", None) or error
            if isinstance(reason, socket.timeout | TimeoutError):
                reason = "timed out"
            raise CatalogError(f"catalog {self.url}: cannot read it: {reason}") from None

    def _left(self, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise CatalogError(f"catalog {self.url}: not read within {self.limits.deadline:g} s")
        return min(self.limits.timeout, left)

    def _read(self, response, deadline: float) -> bytes:
        """The body, a read at a time (`read1`: one receive at most), so that neither its size nor a
        sender dribbling bytes gets past the limits."""
        chunks, size = [], 0
        while chunk := response.read1(64 * 1024):
            size += len(chunk)
            if size > self.limits.max_page_bytes:
                raise CatalogError(f"catalog {self.url}: a page larger than {self.limits.max_page_bytes} bytes")
            chunks.append(chunk)
            self._left(deadline)
        return b"".join(chunks)

    def _parse(self, body: bytes) -> tuple[list, str | None]:
        """The items and the next cursor of a by-query answer."""
        try:
            answer = json.loads(body.decode("utf-8"), object_pairs_hook=_no_repeated_keys,
                                parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise CatalogError(f"catalog {self.url}: the answer is not JSON ({_first_line(error)})") from None
        items = answer.get("items") if isinstance(answer, dict) else None
        page_info = answer.get("pageInfo", {}) if isinstance(answer, dict) else None
        cursor = page_info.get("nextCursor") if isinstance(page_info, dict) else None
        if not isinstance(items, list) or not isinstance(page_info, dict) or not isinstance(cursor, str | None):
            raise CatalogError(f"catalog {self.url}: the answer is not an entities query's "
                               '(`{"items": [...], "pageInfo": {...}}`)')
        return items, cursor


def _status(code: int) -> str:
    """The code and its standard phrase: the server's own phrase could be anything, a line break or
    a secret included, and it goes to the log."""
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def _no_repeated_keys(pairs: list[tuple[str, object]]) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("a key is repeated in an object")
    return result


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
