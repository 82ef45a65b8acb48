"""gRPC atoms: what each means as path tests, and that the checker writes them out so, in
rules and named conditions alike, before the interpreter, the backends or the analysis see them."""

import pytest

from policyc import nodes as n
from policyc.pipeline import load_and_check

EQ, IN, PREFIX = n.Op.EQ, n.Op.IN, n.Op.PREFIX


@pytest.mark.parametrize(("atom", "paths"), [
    (n.GrpcTest(n.GrpcKind.METHOD, EQ, ("a.B/C",)), n.PathTest(EQ, ("/a.B/C",))),
    (n.GrpcTest(n.GrpcKind.METHOD, IN, ("a.B/C", "D/E")), n.PathTest(IN, ("/a.B/C", "/D/E"))),
    (n.GrpcTest(n.GrpcKind.SERVICE, EQ, ("a.B",)), n.PathTest(PREFIX, ("/a.B/",))),
    (n.GrpcTest(n.GrpcKind.SERVICE, IN, ("a.B", "C")),
     n.Or((n.PathTest(PREFIX, ("/a.B/",)), n.PathTest(PREFIX, ("/C/",))))),
    (n.GrpcTest(n.GrpcKind.HEALTH), n.PathTest(PREFIX, ("/grpc.health.v1.Health/",))),
    (n.GrpcTest(n.GrpcKind.REFLECTION), n.Or((n.PathTest(PREFIX, ("/grpc.reflection.v1.ServerReflection/",)),
                                              n.PathTest(PREFIX, ("/grpc.reflection.v1alpha.ServerReflection/",))))),
])
def test_each_atom_is_path_tests(atom, paths):
    assert n.grpc_paths(atom) == paths


def test_the_checker_writes_every_atom_out_and_keeps_the_parsed_tree(tmp_path):
    (tmp_path / "p.policy").write_text(
        'condition reads = grpc method in ["shop.v1.Orders/Get"] or grpc health\n'
        'service s {\n    hosts "s.test"\n    upstream "127.0.0.1:1" http2\n'
        '    deny "no-reflection" when grpc reflection and not authenticated\n'
        '    allow public "reads" when reads or (grpc service "Ping" and method == POST)\n}\n')
    pipeline = load_and_check([str(tmp_path / "p.policy")])
    assert pipeline.ok, pipeline.diagnostics
    checked = pipeline.checked
    exprs = [c.expr for c in checked.conditions.values()] + [r.expr for s in checked.services.values()
                                                             for r in s.rules]
    assert not any(isinstance(node, n.GrpcTest) for expr in exprs for node in n.walk(expr))
    assert n.PathTest(PREFIX, ("/Ping/",)) in n.walk(checked.services["s"].rules[1].expr)
    parsed = [node for item in checked.policy_set.files[0].items for node in n.walk(
        item.expr if isinstance(item, n.Condition) else item.rules[0].expr)]
    assert {node.kind for node in parsed if isinstance(node, n.GrpcTest)} == {
        n.GrpcKind.METHOD, n.GrpcKind.HEALTH, n.GrpcKind.REFLECTION}


def test_a_set_without_grpc_atoms_keeps_its_rules(tmp_path):
    (tmp_path / "p.policy").write_text('service s {\n    hosts "s.test"\n    upstream "127.0.0.1:1"\n'
                                       '    allow public "all" when path prefix "/"\n}\n')
    checked = load_and_check([str(tmp_path / "p.policy")]).checked
    assert checked.services["s"] is checked.policy_set.services[0]
