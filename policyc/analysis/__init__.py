"""Exact analysis of policies with the z3 solver, the interpreter as ground truth: `diff` compares
two checked sets, `analyze` finds rules that never matter and open doors, `who_can` says who may
send a request. Every example request is replayed through the interpreter before it is shown."""

from .diff import diff
from .findings import analyze, who_can

__all__ = ["analyze", "diff", "who_can"]
