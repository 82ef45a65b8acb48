"""The differential proof: a real Envoy decides what the interpreter decides.

Runs Envoy as a process or in a container on the compiled output, replays requests over
HTTP/1.1, h2c and h2, and compares each answer with the interpreter's. Behind `policyc verify`,
`make demo` and the test suite; the pipeline, backends, analysis and operations never import it.
"""
