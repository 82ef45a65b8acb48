"""Reference interpreter: `evaluate(checked, RawRequest) -> Decision` (see evaluator.py)."""

from .evaluator import evaluate
from .request import Decision, RawRequest, RequestError

__all__ = ["Decision", "RawRequest", "RequestError", "evaluate"]
