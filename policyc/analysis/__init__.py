"""Exact analysis of policies with the z3 solver, the interpreter as ground truth: `diff` compares
two checked sets, `analyze` finds rules that never matter and open doors, `who_can` says who may
send a request, `decide` decides one concrete request. Every example request is replayed through
the interpreter before it is shown."""

from .decide import decide
from .diff import diff
from .findings import analyze, who_can

__all__ = ["analyze", "decide", "diff", "who_can"]
