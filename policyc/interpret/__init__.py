"""Reference interpreter: `evaluate(checked, RawRequest) -> Decision` (see evaluator.py)."""

from ..semantics.request import Decision, RawRequest, RequestError
from .evaluator import evaluate

__all__ = ["Decision", "RawRequest", "RequestError", "evaluate"]
