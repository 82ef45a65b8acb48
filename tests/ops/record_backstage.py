"""Records what a real Backstage catalog answers policyc, for the tests that replay it without one.

`.venv/bin/python -m tests.ops.record_backstage` starts the backend of `tests/ops/backstage/` on
`RECORDED_CATALOG`'s entities, fetches them as `policyc` does, two entities a page, and writes
every request's query string and the body answered to `tests/ops/recorded/backstage.json`
(the page's ETag too, where the catalog gave one; this version of Backstage gives none).
"""

from __future__ import annotations

import json
import tempfile
import urllib.parse
from pathlib import Path

from policyc.ops.catalog_api import CatalogClient, Limits
from tests.ops.backstage import running_backstage

RECORDED = Path(__file__).parent / "recorded" / "backstage.json"
RECORDED_CATALOG = [
    {"apiVersion": "backstage.io/v1alpha1", "kind": "Group", "metadata": {"name": "sre", "description": "on call"},
     "spec": {"type": "team", "children": ["platform"]}},
    {"apiVersion": "backstage.io/v1alpha1", "kind": "Group", "metadata": {"name": "platform"},
     "spec": {"type": "team", "children": [], "members": ["carol"]}},
    {"apiVersion": "backstage.io/v1alpha1", "kind": "User", "metadata": {"name": "alice"},
     "spec": {"memberOf": ["sre"], "profile": {"email": "alice@example.com"}}},
    {"apiVersion": "backstage.io/v1alpha1", "kind": "User", "metadata": {"name": "carol"}, "spec": {"memberOf": []}},
    {"apiVersion": "backstage.io/v1alpha1", "kind": "Component",
     "metadata": {"name": "billing", "annotations": {"policyc.dev/template": "team_api",
                                                     "policyc.dev/hosts": "billing.internal",
                                                     "policyc.dev/upstream": "127.0.0.1:8085"}},
     "spec": {"type": "service", "lifecycle": "experimental", "owner": "group:sre"}},
    {"apiVersion": "backstage.io/v1alpha1", "kind": "System", "metadata": {"name": "payments", "namespace": "finance"},
     "spec": {"owner": "user:default/alice"}},
]


class _Recording(CatalogClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pages: list[dict] = []

    def _get(self, page_url, deadline):
        body, etag = super()._get(page_url, deadline)
        self.pages.append({"query": urllib.parse.urlsplit(page_url).query, "etag": etag,
                           "body": json.loads(body)})
        return body, etag


def main() -> None:
    with tempfile.TemporaryDirectory() as workdir, running_backstage(Path(workdir), RECORDED_CATALOG) as backstage:
        client = _Recording(backstage.url, backstage.token, Limits(page_size=2))
        client.fetch()
    RECORDED.parent.mkdir(exist_ok=True)
    RECORDED.write_text(json.dumps({"backstage": _versions(), "pages": client.pages}, indent=2) + "\n")
    print(f"wrote {len(client.pages)} pages to {RECORDED}")


def _versions() -> dict:
    lock = json.loads((Path(__file__).parent / "backstage" / "package-lock.json").read_text())
    return {name.removeprefix("node_modules/"): package["version"] for name, package in lock["packages"].items()
            if name in ("node_modules/@backstage/backend-defaults", "node_modules/@backstage/plugin-catalog-backend")}


if __name__ == "__main__":
    main()
