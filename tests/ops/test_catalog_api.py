"""The live catalog without Backstage: a stand-in server (`fake_catalog.py`) replays what a real
Backstage catalog answered (`recorded/backstage.json`, written by `record_backstage.py`) and
answers everything a catalog may answer badly. Paging, ETags, errors, limits, the token's
confinement, and live entities checked as catalog files are."""

import json
import time
from pathlib import Path

import pytest

from policyc.catalog import LiveEntities, load_catalog
from policyc.credentials.tokens import generate_key, public_jwks
from policyc.diagnostics import render_text
from policyc.ops.catalog_api import CatalogClient, CatalogError, Limits
from policyc.pipeline import load_and_check
from tests.ops.fake_catalog import FakeCatalog, json_answer, query

RECORDED = json.loads((Path(__file__).parent / "recorded" / "backstage.json").read_text())
TOKEN = "s3cret-token-for-tests"
USER = "backstage.io/v1alpha1"


def entity(kind: str, name: str, **spec) -> dict:
    return {"apiVersion": USER, "kind": kind, "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def test_recorded_backstage_pages_are_read_whole_and_checked_as_files_are():
    with FakeCatalog() as fake:
        for page in RECORDED["pages"]:
            fake.pages[page["query"]] = json_answer(page["body"])
        live = CatalogClient(fake.url, TOKEN, Limits(page_size=2)).fetch()
    # The same requests, in order, that the real catalog was sent: cursor paging, two a page.
    assert [q for q, _ in fake.requests] == [page["query"] for page in RECORDED["pages"]]
    assert all(headers["Authorization"] == f"Bearer {TOKEN}" for _, headers in fake.requests)
    catalog, _, diagnostics = load_catalog([], live)
    assert diagnostics == []
    assert sorted(catalog.entities) == ["component:default/billing", "group:default/platform", "group:default/sre",
                                        "system:finance/payments", "user:default/alice", "user:default/carol"]
    assert catalog.users_in("group:default/sre") == {"user:default/alice", "user:default/carol"}
    assert catalog.owner_of("component:default/billing") == "group:default/sre"
    # What makes a service of an entity comes back too: policyc's annotations and the lifecycle.
    billing = catalog.entities["component:default/billing"]
    assert {a.key: a.value for a in billing.annotations} == {
        "policyc.dev/template": "team_api", "policyc.dev/hosts": "billing.internal",
        "policyc.dev/upstream": "127.0.0.1:8085"}
    assert billing.lifecycle[0] == "experimental"


def test_an_unchanged_page_is_not_sent_again():
    entities = [entity("User", f"u{i}") for i in range(5)]
    with FakeCatalog() as fake:
        fake.serve(entities, page_size=2)
        client = CatalogClient(fake.url, limits=Limits(page_size=2))
        first = client.fetch()
        fake.requests.clear()
        assert client.fetch() == first
        assert all("If-None-Match" in headers for _, headers in fake.requests) and len(fake.requests) == 3
        fake.serve([*entities, entity("User", "u5")], page_size=2)
        assert len(client.fetch().entities) == 6


def test_without_etags_every_page_is_read_again():
    with FakeCatalog() as fake:
        fake.serve([entity("User", "a")], etags=False)
        client = CatalogClient(fake.url)
        assert client.fetch() == client.fetch()
        assert all("If-None-Match" not in headers for _, headers in fake.requests)


def _failure(fake: FakeCatalog, client: CatalogClient | None = None) -> str:
    with pytest.raises(CatalogError) as caught:
        (client or CatalogClient(fake.url, TOKEN, Limits(timeout=0.5, deadline=2))).fetch()
    message = str(caught.value)
    assert TOKEN not in message and "\n" not in message and message.startswith(f"catalog {fake.url}: ")
    return message.removeprefix(f"catalog {fake.url}: ")


@pytest.mark.parametrize(("answer", "why"), [
    ((503, {}, b"busy"), "HTTP 503 Service Unavailable"),
    ((500, {}, b""), "HTTP 500 Internal Server Error"),
    ((401, {}, b"{}"), "HTTP 401 Unauthorized (is the token right?)"),
    ((404, {}, b"{}"), "HTTP 404 Not Found"),
    ((200, {}, b'{"items": [], "pageInfo": {}'), "the answer is not JSON (Expecting ',' delimiter"),
    ((200, {}, b"\xff"), "the answer is not JSON ("),
    ((200, {}, b'{"items": [NaN], "pageInfo": {}}'), "the answer is not JSON (NaN is not JSON)"),
    ((200, {}, b'{"items": [], "items": [], "pageInfo": {}}'), "the answer is not JSON (a key is repeated"),
    ((200, {}, b"[" * 100_000 + b"]" * 100_000), "the answer is not JSON ("),
    ((200, {}, b'{"items": {}, "pageInfo": {}}'), "the answer is not an entities query's"),
    ((200, {}, b'{"items": [], "pageInfo": {"nextCursor": 3}}'), "the answer is not an entities query's"),
    ((200, {}, b'[]'), "the answer is not an entities query's"),
    ((302, {"Location": "http://127.0.0.1:1/elsewhere"}, b""), "HTTP 302 Found"),
])
def test_a_bad_answer_is_one_line_naming_the_catalog(answer, why):
    with FakeCatalog() as fake:
        fake.default = answer
        assert _failure(fake).startswith(why)


def test_the_servers_own_status_phrase_is_never_shown():
    with FakeCatalog() as fake:
        fake.default = (599, {}, b"")
        assert _failure(fake) == "HTTP 599"
        fake.server.RequestHandlerClass.responses = {500: (f"{TOKEN}\nforged log line", "")}
        fake.default = (500, {}, b"")
        assert _failure(fake) == "HTTP 500 Internal Server Error"


def test_a_redirect_is_never_followed_with_the_token():
    with FakeCatalog() as elsewhere, FakeCatalog() as fake:
        fake.default = (307, {"Location": elsewhere.url + "/entities/by-query"}, b"")
        assert _failure(fake) == "HTTP 307 Temporary Redirect"
    assert elsewhere.requests == []


def test_limits_pages_size_and_time():
    with FakeCatalog() as fake:
        fake.serve([entity("User", f"u{i}") for i in range(5)], page_size=1)
        assert _failure(fake, CatalogClient(fake.url, limits=Limits(page_size=1, max_pages=4))) == \
            "more than 4 pages of 1 entities"
        fake.pages = {query(): json_answer({"items": [], "pageInfo": {"nextCursor": "again"}}),
                      query("again"): json_answer({"items": [], "pageInfo": {"nextCursor": "again"}})}
        assert _failure(fake) == "its pages loop (a cursor came back)"
        fake.serve([entity("User", "x" * 100)])
        assert _failure(fake, CatalogClient(fake.url, limits=Limits(max_page_bytes=100))) == \
            "a page larger than 100 bytes"
        fake.delay = 1.0
        started = time.monotonic()
        assert _failure(fake) == "cannot read it: timed out"
        assert time.monotonic() - started < 1.0
        fake.delay, fake.dribble = 0.0, 0.2  # every read within the time-out, the whole too slow
        started = time.monotonic()
        assert _failure(fake) == "not read within 2 s"
        assert time.monotonic() - started < 3.0


def test_an_unreachable_catalog():
    with FakeCatalog() as fake:
        url = fake.url
    with pytest.raises(CatalogError, match=r"^catalog http://127\.0\.0\.1:\d+/api/catalog: cannot read it: "):
        CatalogClient(url).fetch()


@pytest.mark.parametrize(("url", "why"), [
    ("ftp://host/api/catalog", "is not an http:// or https:// URL"),
    ("http:///api/catalog", "is not an http:// or https:// URL"),
    ("https://user:pw@host/api/catalog", "holds credentials"),
    ("https://host/api/catalog?x=1", "has a query or a fragment"),
    ("http://backstage.example.com/api/catalog", "is plain http: a token is sent only over https"),
])
def test_urls_refused(url, why):
    with pytest.raises(ValueError, match=f"^{why}"):
        CatalogClient(url, TOKEN)


def test_a_token_goes_over_plain_http_to_loopback_only():
    for url in ("http://127.0.0.1:7007/api/catalog", "http://[::1]:7007/api/catalog", "http://localhost/api/catalog",
                "https://backstage.example.com/api/catalog/"):
        assert CatalogClient(url, TOKEN).url == url.rstrip("/")
    assert CatalogClient("http://backstage.example.com/api/catalog").url  # no token, nothing to leak


POLICY = """issuer dev {
    url "https://dev.test"
    jwks file "dev.jwks.json"
    catalog users
}
catalog "catalog"
service s {
    hosts "s.test"
    upstream "127.0.0.1:1"
    allow "sre" when member "group:default/sre"
}
"""


def _policy(tmp_path: Path, text: str = POLICY) -> str:
    (tmp_path / "dev.jwks.json").write_text(json.dumps(public_jwks(generate_key())))
    (tmp_path / "s.policy").write_text(text)
    return str(tmp_path / "s.policy")


def test_live_entities_replace_the_catalog_folders(tmp_path):
    """The folder the policy names is not read (it need not exist); the live entities are."""
    live = LiveEntities("http://127.0.0.1:7007/api/catalog", (entity("Group", "sre"),))
    pipeline = load_and_check([_policy(tmp_path)], live=live)
    assert pipeline.ok, pipeline.diagnostics
    assert not load_and_check([_policy(tmp_path)]).ok  # without it: the folder is missing
    no_statement = POLICY.replace('catalog "catalog"\n', "")
    assert load_and_check([_policy(tmp_path, no_statement)], live=live).ok


def test_a_bad_live_entity_is_located_by_url_and_ref(tmp_path):
    url = "http://127.0.0.1:7007/api/catalog"
    live = LiveEntities(url, (entity("Group", "sre"), entity("User", "bob", memberOf=["group:default/nobody"]),
                              entity("User", "Bad Name"), entity("Group", "sre"), "not an object",
                              {"apiVersion": "backstage.io/v2", "kind": "User", "metadata": {"name": "x"}}))
    pipeline = load_and_check([_policy(tmp_path)], live=live)
    assert not pipeline.ok
    rendered = "\n".join(render_text(d, pipeline.sources) for d in pipeline.diagnostics)
    assert f"{url}#user:default/bob:10:7: error[catalog/dangling-ref]: `memberOf` of `user:default/bob` names " \
           "`group:default/nobody`, which the catalog does not contain" in rendered
    assert '10 |       "group:default/nobody"\n   |       ^^^^^^^^^^^^^^^^^^^^^^' in rendered
    assert f"{url}#entity-3:5:13: error[catalog/bad-entity]: `metadata.name` `Bad Name` is not a valid name" in rendered
    assert f"{url}#group:default/sre@4:5:13: error[catalog/duplicate-entity]" in rendered
    assert f"first declared at {url}#group:default/sre:5:13" in rendered
    assert f"{url}#entity-5:1:1: error[catalog/bad-entity]: an entity that is not a JSON object" in rendered
    assert f"{url}#user:default/x:2:17: error[catalog/bad-entity]: `User` entity with `apiVersion: " \
           "backstage.io/v2`, which Backstage does not accept" in rendered
