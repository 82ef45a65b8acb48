"""A stand-in Backstage catalog on a free 127.0.0.1 port, serving recorded or made-up answers.

`FakeCatalog()` (a context manager) answers `GET /api/catalog/entities/by-query?QUERY` with
`pages[QUERY]` (status, headers, body), else with `default`, and records each request's query and
headers. `serve(entities, page_size)` sets up cursor paging over entities as Backstage pages them,
with an ETag per page (a request bearing it gets 304) unless `etags=False`. `delay` holds every
answer back; `dribble` sends the body one byte at a time, `dribble` seconds apart.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from policyc.ops.catalog_api import FIELDS, Limits

Answer = tuple[int, dict[str, str], bytes]


def query(cursor: str | None = None, page_size: int = Limits().page_size) -> str:
    """The query string policyc sends for the first page, or for the page after `cursor`."""
    fields = [("fields", ",".join(FIELDS)), ("limit", str(page_size))]
    kinds = ["api", "component", "domain", "group", "resource", "system", "user"]
    first = [*(("filter", f"kind={kind}") for kind in kinds), *fields]
    return urllib.parse.urlencode(first if cursor is None else [("cursor", cursor), *fields])


def json_answer(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()


class FakeCatalog:
    def __init__(self) -> None:
        self.pages: dict[str, Answer] = {}
        self.default: Answer = (404, {}, b"not found")
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.delay = 0.0
        self.dribble = 0.0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path, _, query_string = self.path.partition("?")
                fake.requests.append((query_string, dict(self.headers)))
                time.sleep(fake.delay)
                status, headers, body = fake.answer(path, query_string, self.headers)
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    if fake.dribble:
                        for byte in body:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(fake.dribble)
                    else:
                        self.wfile.write(body)
                except OSError:  # the client gave up
                    pass

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/catalog"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, path: str, query_string: str, headers) -> Answer:
        if path != "/api/catalog/entities/by-query":
            return 404, {}, b"not found"
        status, answer_headers, body = self.pages.get(query_string, self.default)
        etag = answer_headers.get("ETag")
        if etag is not None and headers.get("If-None-Match") == etag:
            return 304, {"ETag": etag}, b""
        return status, answer_headers, body

    def serve(self, entities: list[dict], page_size: int = Limits().page_size, etags: bool = True) -> None:
        """Cursor paging over `entities`, as policyc asks for them."""
        self.pages = {}
        chunks = [entities[i:i + page_size] for i in range(0, len(entities), page_size)] or [[]]
        for index, chunk in enumerate(chunks):
            cursor = f"page-{index}" if index else None
            following = f"page-{index + 1}" if index + 1 < len(chunks) else None
            body = {"items": chunk, "totalItems": len(entities),
                    "pageInfo": {"nextCursor": following} if following else {}}
            etag = f'W/"{hash(json.dumps(body, sort_keys=True)) & 0xffffffff:x}"'
            self.pages[query(cursor, page_size)] = json_answer(body, headers={"ETag": etag} if etags else None)

    def __enter__(self) -> FakeCatalog:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
