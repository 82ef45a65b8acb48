"""What Envoy does with a request before and around a policy: its model, shared by every stage.

Paths and their normalization, hosts and routing, the header table each codec hands on, HTTP/2
framing, tokens as jwt_authn verifies them, client certificates, networks, globs and gRPC names,
and what every request a condition matches must have (a path prefix, a method).
The checker, the interpreter, every backend and the analysis read these; this package imports
nothing of policyc but `nodes`, `source` and `diagnostics`.
"""
