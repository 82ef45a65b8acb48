"""The language server, driven over its protocol (JSON-RPC on stdio) by a real LSP client: the
diagnostics an editor shows are `policyc check`'s, at the same spans (UTF-16 columns); hover,
go-to-definition, completion and formatting answer from the same checked policies."""

import asyncio
import json
import shutil
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from lsprotocol import types
from pygls.lsp.client import LanguageClient
from pygls.uris import from_fs_path

from policyc.cli import main
from policyc.pipeline import load_and_check
from policyc.source import Source
from policyc.syntax import parse
from policyc.syntax.printer import format_file

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "envoy_configs" / "examples" / "backstage"
GOLDEN = ROOT / "tests" / "golden" / "diagnostics"
FIVE_MISTAKES = GOLDEN / "five_mistakes" / "main.policy"
TIMEOUT = 30


class Client(LanguageClient):
    """Records every diagnostics notification, so a test can wait for the next one of a file."""

    def __init__(self) -> None:
        super().__init__("policyc-test", "1")
        self.diagnostics: dict[str, list[types.Diagnostic]] = {}
        self.arrived = asyncio.Condition()
        self.opened: set[str] = set()

        @self.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        async def _published(params: types.PublishDiagnosticsParams) -> None:
            async with self.arrived:
                self.diagnostics[params.uri] = params.diagnostics
                self.arrived.notify_all()

    async def next_diagnostics(self, uri: str, action) -> list[types.Diagnostic]:
        """Run `action` (which makes the server publish) and return the diagnostics `uri` gets."""
        async with self.arrived:
            self.diagnostics.pop(uri, None)
            action()
            await asyncio.wait_for(self.arrived.wait_for(lambda: uri in self.diagnostics), TIMEOUT)
            return self.diagnostics[uri]

    async def open(self, path: Path, wait_for: Path | None = None) -> list[types.Diagnostic]:
        """Open a file as the editor would; its diagnostics (or those of `wait_for`)."""
        uri = from_fs_path(str(path))
        self.opened.add(uri)
        item = types.TextDocumentItem(uri=uri, language_id="policy", version=1, text=path.read_text(encoding="utf-8"))
        return await self.next_diagnostics(
            from_fs_path(str(wait_for or path)),
            lambda: self.text_document_did_open(types.DidOpenTextDocumentParams(item)))


async def start(client: Client) -> None:
    await client.start_io(sys.executable, "-m", "policyc", "lsp")
    await asyncio.wait_for(client.initialize_async(types.InitializeParams(
        capabilities=types.ClientCapabilities(), process_id=None)), TIMEOUT)
    client.initialized(types.InitializedParams())


async def stop(client: Client) -> None:
    await asyncio.wait_for(client.shutdown_async(None), TIMEOUT)
    client.exit(None)
    await asyncio.wait_for(client.stop(), TIMEOUT)


@pytest.fixture(scope="module")
def lsp():
    """One server process for the module (it starts in seconds on a busy machine), driven from an
    event loop in a thread; `lsp(scenario)` runs `scenario(client)` there and returns its result.
    Tests use files of their own, so what one opens does not change another's answers."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def drive(coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(4 * TIMEOUT)

    async def scenario_then_close(scenario):
        try:
            return await scenario(client)
        finally:
            for uri in client.opened:
                client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri)))
            client.opened.clear()

    client = Client()
    drive(start(client))
    try:
        yield lambda scenario: drive(scenario_then_close(scenario))
    finally:
        drive(stop(client))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(TIMEOUT)


def check_json(*paths) -> list[dict]:
    result = CliRunner().invoke(main, ["check", "--format", "json", *map(str, paths)])
    return json.loads(result.stdout)


def as_spans(diagnostics: list[types.Diagnostic]) -> list[tuple]:
    return [(d.code, d.range.start.line, d.range.start.character, d.range.end.line, d.range.end.character)
            for d in diagnostics]


@pytest.fixture
def example(tmp_path) -> Path:
    shutil.copytree(EXAMPLE, tmp_path / "example")
    return tmp_path / "example"


def utf16(path: str, line: int, column: int) -> tuple[int, int]:
    """A 1-based code-point line/column of a file → a 0-based LSP position in UTF-16 units. A file
    that is not UTF-8 is read as the checker shows it, each bad byte one replacement character."""
    text = Path(path).read_text(encoding="utf-8", errors="replace").split("\n")[line - 1]
    return line - 1, len(text[:column - 1].encode("utf-16-le")) // 2


@pytest.mark.parametrize("golden", sorted(p for p in GOLDEN.iterdir() if p.is_dir()), ids=lambda p: p.name)
def test_diagnostics_are_those_of_policyc_check(lsp, golden, tmp_path):
    """Every golden mistake, opened in the editor, is reported where `policyc check` reports it:
    in the file itself and in the files and catalog it reads."""
    folder = tmp_path / golden.name
    shutil.copytree(golden, folder)
    main_policy = folder / "main.policy"
    expected: dict[str, list] = {}
    for d in check_json(main_policy):
        start, end = utf16(d["file"], d["line"], d["column"]), utf16(d["file"], d["end_line"], d["end_column"])
        expected.setdefault(from_fs_path(d["file"]), []).append((d["code"], d["severity"], *start, *end))
    severities = {types.DiagnosticSeverity.Error: "error", types.DiagnosticSeverity.Warning: "warning"}

    async def scenario(client):
        await client.open(main_policy)
        async with client.arrived:
            await asyncio.wait_for(client.arrived.wait_for(lambda: set(expected) <= set(client.diagnostics)), TIMEOUT)
        for uri, spans in expected.items():
            shown = [(d.code, severities[d.severity], *as_spans([d])[0][1:]) for d in client.diagnostics[uri]]
            assert sorted(shown) == sorted(spans), uri
        assert {d.source for ds in client.diagnostics.values() for d in ds} <= {"policyc"}

    lsp(scenario)


def test_a_diagnostic_carries_its_hint_and_notes(lsp, tmp_path):
    policy = tmp_path / "main.policy"
    shutil.copy(FIVE_MISTAKES, policy)
    (tmp_path / "more.policy").write_text("condition admins = authenticated\n")

    async def scenario(client):
        diagnostics = await client.open(policy)
        assert diagnostics[0].message == "`head` is not an upper-case HTTP method\nhint: write `HEAD`"
        text = policy.read_text().replace("condition admins", 'import "more.policy"\ncondition admins', 1)
        uri = from_fs_path(str(policy))
        change = types.TextDocumentContentChangeWholeDocument(text=text)
        diagnostics = await client.next_diagnostics(uri, lambda: client.text_document_did_change(
            types.DidChangeTextDocumentParams(types.VersionedTextDocumentIdentifier(2, uri), [change])))
        [duplicate] = [d for d in diagnostics if d.code == "check/duplicate-condition"]
        [note] = duplicate.related_information
        assert note.message == "first declared here"
        assert note.location.uri == from_fs_path(str(tmp_path / "more.policy"))

    lsp(scenario)


def test_columns_are_utf16_code_units_after_non_ascii_text(lsp, tmp_path):
    # "é" is one UTF-16 unit, "🙂" two: the unknown issuer starts at code point 21 (1-based), so at
    # 20 code points from the line's start, and at 22 UTF-16 units.
    line = 'service cafe {\n    hosts "x.internal"\n    upstream "127.0.0.1:8080"\n' \
           '    deny "🙂🙂é" when issuer nope\n}\n'
    policy = tmp_path / "main.policy"
    policy.write_text(line, encoding="utf-8")
    [cli] = [d for d in check_json(policy) if d["code"] == "check/unknown-issuer"]
    assert (cli["line"], cli["column"], cli["end_column"]) == (4, 21, 32)

    async def scenario(client):
        [lsp] = [d for d in await client.open(policy) if d.code == "check/unknown-issuer"]
        assert (lsp.range.start.line, lsp.range.start.character, lsp.range.end.character) == (3, 22, 33)

    lsp(scenario)


def test_unsaved_edits_are_checked_and_a_fix_clears_the_diagnostics(lsp, tmp_path):
    policy = tmp_path / "main.policy"
    policy.write_text("condition c = method == GET\n")

    async def scenario(client):
        uri = from_fs_path(str(policy))
        assert list(await client.open(policy)) == []

        def edit(text, version):
            change = types.TextDocumentContentChangeWholeDocument(text=text)
            client.text_document_did_change(types.DidChangeTextDocumentParams(
                types.VersionedTextDocumentIdentifier(version=version, uri=uri), [change]))

        broken = await client.next_diagnostics(uri, lambda: edit("condition c = method == GET and\n", 2))
        assert [d.code for d in broken] == ["parse/unexpected-end"]
        assert list(await client.next_diagnostics(uri, lambda: edit("condition c = method == GET\n", 3))) == []
        assert policy.read_text() == "condition c = method == GET\n", "the server never writes files"

    lsp(scenario)


def test_diagnostics_of_an_imported_file_that_is_not_open(lsp, tmp_path):
    (tmp_path / "main.policy").write_text('import "shared.policy"\ncondition c = shared\n')
    (tmp_path / "shared.policy").write_text("condition shared = method in [GET, get]\n")
    [expected] = check_json(tmp_path / "main.policy")

    async def scenario(client):
        [diagnostic] = await client.open(tmp_path / "main.policy", wait_for=tmp_path / "shared.policy")
        assert list(client.diagnostics[from_fs_path(str(tmp_path / "main.policy"))]) == []
        assert (diagnostic.code, diagnostic.range.start.line + 1, diagnostic.range.start.character + 1) == (
            expected["code"], expected["line"], expected["column"])

    lsp(scenario)


def test_diagnostics_of_another_file_are_cleared_when_they_no_longer_apply(lsp, tmp_path):
    main_policy, shared = tmp_path / "main.policy", tmp_path / "shared.policy"
    main_policy.write_text('import "shared.policy"\n')
    shared.write_text("condition shared = method == get\n")

    async def scenario(client):
        assert len(await client.open(main_policy, wait_for=shared)) == 1
        uri = from_fs_path(str(main_policy))
        change = types.TextDocumentContentChangeWholeDocument(text="condition c = authenticated\n")
        cleared = await client.next_diagnostics(from_fs_path(str(shared)), lambda: client.text_document_did_change(
            types.DidChangeTextDocumentParams(types.VersionedTextDocumentIdentifier(2, uri), [change])))
        assert list(cleared) == []

    lsp(scenario)


def test_files_are_read_only_inside_the_document_folder_and_the_workspace(lsp, tmp_path):
    """Besides a document's own folder, its policies may read the workspace folders and nothing
    else: an import of /proc/self/environ stays refused whatever the workspace."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "shared").mkdir()
    main_policy = tmp_path / "policies" / "main.policy"
    main_policy.write_text('import "../shared/common.policy"\nimport "/proc/self/environ"\ncondition c = staff\n')
    (tmp_path / "shared" / "common.policy").write_text("condition staff = authenticated\n")
    workspace = [types.WorkspaceFolder(from_fs_path(str(tmp_path)), "workspace")]

    async def scenario(client):
        def folders(added, removed):
            client.workspace_did_change_workspace_folders(types.DidChangeWorkspaceFoldersParams(
                types.WorkspaceFoldersChangeEvent(added=added, removed=removed)))

        uri = from_fs_path(str(main_policy))
        refused = await client.open(main_policy)
        assert [(d.code, d.range.start.line) for d in refused] == [("load/outside-root", 0), ("load/outside-root", 1)]
        folders(workspace, [])
        try:
            change = types.TextDocumentContentChangeWholeDocument(text=main_policy.read_text())
            [environ] = await client.next_diagnostics(uri, lambda: client.text_document_did_change(
                types.DidChangeTextDocumentParams(types.VersionedTextDocumentIdentifier(2, uri), [change])))
        finally:
            folders([], workspace)
        assert (environ.code, environ.range.start.line, environ.range.start.character) == ("load/outside-root", 1, 7)
        assert "PATH=" not in environ.message

    lsp(scenario)


def position_of(path: Path, needle: str, offset: int = 0) -> types.Position:
    """The position of `needle` (plus `offset` characters) in an ASCII file."""
    text = path.read_text()
    index = text.index(needle) + offset
    return types.Position(text.count("\n", 0, index), index - (text.rfind("\n", 0, index) + 1))


def test_hover_shows_definitions_and_resolved_group_members(lsp, example):
    payments = example / "payments.policy"
    checked = load_and_check([str(example)]).checked

    async def scenario(client):
        await client.open(payments)
        uri = from_fs_path(str(payments))

        async def hover(needle, offset=0):
            result = await client.text_document_hover_async(
                types.HoverParams(types.TextDocumentIdentifier(uri), position_of(payments, needle, offset)))
            return result.contents.value

        rule = await hover('allow "sre-read"', 2)
        assert "allow rule ` sre-read ` in service ` payments `" in rule
        assert 'allow "sre-read" when read_only and sre' in rule
        assert "condition read_only = method in [GET, HEAD, OPTIONS]" in await hover("read_only and sre", 2)
        assert 'url "https://example.okta.com/oauth2/default"' in await hover("issuer okta", 8)
        owners = await hover("member owners(component:payments) or", 3)
        owner = checked.catalog.owner_of("component:default/payments")
        members = sorted(checked.catalog.users_in(owner))
        assert members and all(f"- ` {user} `" in owners for user in members)
        assert f"` {owner} `: {len(members)} member" in owners

    lsp(scenario)


def test_hover_on_a_group_lists_its_members_through_child_groups(lsp, example):
    common = example / "common.policy"
    common.write_text(common.read_text().replace('member "group:default/sre"', 'member "engineering"'))
    catalog = load_and_check([str(example)]).checked.catalog
    users = sorted(catalog.users_in("group:default/engineering"))
    below = sorted(catalog.groups_within("group:default/engineering") - {"group:default/engineering"})
    assert len(users) > 1 and below, "the example's engineering group has members through its child groups"

    async def scenario(client):
        await client.open(common)
        result = await client.text_document_hover_async(types.HoverParams(
            types.TextDocumentIdentifier(from_fs_path(str(common))), position_of(common, 'member "engineering', 2)))
        text = result.contents.value
        assert f"` group:default/engineering `: {len(users)} members" in text
        assert all(f"- ` {user} `" in text for user in users)
        assert all(f"` {group} `" in text.partition("with its groups")[2] for group in below)

    lsp(scenario)


def test_hover_right_after_an_edit_answers_for_the_new_text(lsp, tmp_path):
    """Checks wait for edits to settle, but a hover never reads an older text's spans."""
    policy = tmp_path / "main.policy"
    policy.write_text("condition a = method == GET\ncondition b = a\n")

    async def scenario(client):
        uri = from_fs_path(str(policy))
        await client.open(policy)
        edits = ["condition a = method == GET\n# one\ncondition b = a\n",
                 "condition a = method == POST\n# one\n# two\ncondition b = a and nope\n"]
        for version, text in enumerate(edits, 2):
            change = types.TextDocumentContentChangeWholeDocument(text)
            client.text_document_did_change(types.DidChangeTextDocumentParams(
                types.VersionedTextDocumentIdentifier(version, uri), [change]))
        hover = await client.text_document_hover_async(types.HoverParams(
            types.TextDocumentIdentifier(uri), types.Position(3, 15)))
        assert "condition a = method == POST" in hover.contents.value
        def final_text_checked():
            return [(d.code, d.range.start.line) for d in client.diagnostics.get(uri, [])] == [
                ("check/unknown-condition", 3)]

        async with client.arrived:
            await asyncio.wait_for(client.arrived.wait_for(final_text_checked), TIMEOUT)

    lsp(scenario)


def test_hover_keeps_policy_text_out_of_markdown(lsp, tmp_path):
    """Backticks in a rule name cannot end the code span and smuggle Markdown into the editor."""
    policy = tmp_path / "main.policy"
    policy.write_text('service s {\n    hosts "s.internal"\n    upstream "127.0.0.1:1"\n'
                      '    deny "a``` [x](https://example.com) ```" when method == GET\n}\n')

    async def scenario(client):
        await client.open(policy)
        hover = await client.text_document_hover_async(types.HoverParams(
            types.TextDocumentIdentifier(from_fs_path(str(policy))), types.Position(3, 5)))
        text = hover.contents.value
        assert "```` a``` [x](https://example.com) ``` ````" in text
        assert "````policy\n" in text and "\n````\n" in text

    lsp(scenario)


def test_hover_on_a_grpc_atom_shows_the_path_it_tests(lsp, tmp_path):
    policy = tmp_path / "main.policy"
    policy.write_text('condition reads = grpc service in ["shop.v1.Orders", "Ping"] or grpc health\n')

    async def scenario(client):
        await client.open(policy)
        uri = types.TextDocumentIdentifier(from_fs_path(str(policy)))
        service = await client.text_document_hover_async(types.HoverParams(uri, types.Position(0, 20)))
        assert 'path prefix "/shop.v1.Orders/" or path prefix "/Ping/"' in service.contents.value
        health = await client.text_document_hover_async(types.HoverParams(uri, types.Position(0, 65)))
        assert 'path prefix "/grpc.health.v1.Health/"' in health.contents.value

    lsp(scenario)


def test_hover_reads_a_grants_conditions(lsp, tmp_path):
    policy = tmp_path / "main.policy"
    policy.write_text('service s {\n    hosts "s.internal"\n    upstream "127.0.0.1:8080"\n}\n\n'
                      'grant g {\n    service s\n    who header "x-user" == "alice"\n    what grpc health\n'
                      '    from "2999-01-01T08:00:00Z"\n    until "2999-01-01T09:00:00Z"\n'
                      '    approved by "bob"\n    reason "x"\n}\n')

    async def scenario(client):
        await client.open(policy)
        uri = types.TextDocumentIdentifier(from_fs_path(str(policy)))
        health = await client.text_document_hover_async(types.HoverParams(uri, position_of(policy, "grpc health", 1)))
        assert 'path prefix "/grpc.health.v1.Health/"' in health.contents.value

    lsp(scenario)


def test_go_to_definition_of_conditions_issuers_imports_and_groups(lsp, example):
    payments, common = example / "payments.policy", example / "common.policy"

    async def scenario(client):
        await client.open(payments)

        async def definition(path, needle, offset=0):
            return await client.text_document_definition_async(types.DefinitionParams(
                types.TextDocumentIdentifier(from_fs_path(str(path))), position_of(path, needle, offset)))

        target = await definition(payments, "read_only and sre", 1)
        assert target.uri == from_fs_path(str(common))
        assert target.range.start == position_of(common, "read_only =")
        target = await definition(payments, "issuer okta", 9)
        assert (target.uri, target.range.start) == (from_fs_path(str(common)), position_of(common, "okta {"))
        target = await definition(payments, '"common.policy"', 1)
        assert (target.uri, target.range.start.line) == (from_fs_path(str(common)), 0)
        await client.open(common)
        target = await definition(common, 'member "group:default/sre"', 1)
        assert target.uri == from_fs_path(str(example / "catalog" / "org.yaml"))

    lsp(scenario)


def test_completion_offers_keywords_names_and_catalog_refs(lsp, example):
    payments = example / "payments.policy"
    text = payments.read_text()

    async def scenario(client):
        uri = from_fs_path(str(payments))
        await client.open(payments)

        async def complete(line_text):
            edited = text.replace("}\n", f"    allow \"new\" when {line_text}\n}}\n")
            change = types.TextDocumentContentChangeWholeDocument(text=edited)
            await client.next_diagnostics(uri, lambda: client.text_document_did_change(
                types.DidChangeTextDocumentParams(types.VersionedTextDocumentIdentifier(2, uri), [change])))
            line = edited.count("\n") - 2  # the line before the closing brace
            position = types.Position(line, len(f"    allow \"new\" when {line_text}"))
            result = await client.text_document_completion_async(
                types.CompletionParams(types.TextDocumentIdentifier(uri), position))
            return {item.label for item in result.items}

        general = await complete("")
        assert {"read_only", "sre", "from_office", "authenticated", "member", "path", "deny"} <= general
        assert await complete("issuer ") == {"backstage", "okta"}
        groups = await complete('member "')
        assert "group:default/sre" in groups and all(g.startswith("group:") for g in groups)
        assert "component:default/payments" in await complete("member owners(")

    lsp(scenario)


def test_formatting_is_policyc_fmt(lsp, tmp_path):
    policy = tmp_path / "main.policy"
    messy = 'condition   c=method==GET   # keep me\nservice s{hosts "s.internal" upstream "127.0.0.1:1"}\n'
    policy.write_text(messy)
    file, _ = parse(Source(str(policy), messy))
    expected = format_file(file, Source(str(policy), messy))

    async def scenario(client):
        await client.open(policy)
        options = types.FormattingOptions(tab_size=4, insert_spaces=True)
        uri = from_fs_path(str(policy))
        [edit] = await client.text_document_formatting_async(
            types.DocumentFormattingParams(types.TextDocumentIdentifier(uri), options))
        assert edit.new_text == expected
        assert (edit.range.start.line, edit.range.start.character) == (0, 0)
        assert (edit.range.end.line, edit.range.end.character) == (2, 0)

    lsp(scenario)


def test_hover_and_definition_of_templates_uses_and_parameters(lsp, tmp_path):
    """A `use` shows the rules it gives its service, written out with the arguments, and leads to
    its template; a `$parameter` leads to its declaration."""
    shutil.copytree(ROOT / "envoy_configs" / "examples" / "templates", tmp_path / "example")
    policy = tmp_path / "example" / "services.policy"

    async def scenario(client):
        await client.open(policy)
        uri = types.TextDocumentIdentifier(from_fs_path(str(policy)))

        async def hover(needle, offset=0):
            result = await client.text_document_hover_async(types.HoverParams(uri, position_of(policy, needle, offset)))
            return result.contents.value

        async def definition(needle, offset=0):
            return await client.text_document_definition_async(
                types.DefinitionParams(uri, position_of(policy, needle, offset)))

        used = await hover("use internal_api(entity = component:invoices", 6)
        assert "template ` internal_api ` gives service ` invoices ` 4 rules" in used
        assert 'allow public "internal_api/health" when method == GET and path == "/ready"' in used
        assert 'member "sre" or member "payments-team"' in used
        assert "locked deny rule ` no-debug ` in template ` internal_api `" in await hover('deny "no-debug"', 2)
        assert "health: path = " in await hover("$health", 2)
        target = await definition("use internal_api(entity = component:invoices", 6)
        assert target.range.start == position_of(policy, "internal_api(entity: ref")
        target = await definition("$health", 2)
        assert target.range.start == position_of(policy, 'health: path = "/healthz"')

    lsp(scenario)
