"""policyc: identity-aware access policies for services behind Envoy.

The stages can be called one by one: `load_and_check(paths)` parses and checks policy files,
`evaluate(checked, request)` decides a request with the reference interpreter.
"""

from .diagnostics import Diagnostic, PolicycError
from .interpret import Decision, RawRequest, evaluate
from .pipeline import load_and_check

__all__ = ["Decision", "Diagnostic", "PolicycError", "RawRequest", "evaluate", "load_and_check"]
