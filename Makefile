# `make test` and `make demo` set up .venv themselves; nothing else needs installing by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXAMPLE := envoy_configs/examples/backstage

.PHONY: test demo bench security differential fuzz lint clean report-screenshot native

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/pytest

# The demo runs the native filter too: it builds the library (gcc) and shows Envoy where it is.
demo: $(BIN)/.installed native
	ENVOY_DYNAMIC_MODULES_SEARCH_PATH=$(CURDIR)/native_runtime/build $(BIN)/python -m policyc.dev.demo $(EXAMPLE)

# docs/report.png: the example's `policyc report` page in headless Chromium (Debian's chromium and
# chromium-driver).
report-screenshot: $(BIN)/.installed
	$(BIN)/python -m tests.report.screenshot docs/report.png

# Benchmarks need wrk, h2load (Debian's nghttp2-client), valgrind and cedarpy (the `bench` extra);
# tables on stdout, JSON in bench/results/.
bench: $(BIN)/.bench-installed native
	command -v wrk >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk; }
	command -v h2load >/dev/null || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q nghttp2-client; }
	command -v valgrind >/dev/null || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind; }
	ENVOY_DYNAMIC_MODULES_SEARCH_PATH=$(CURDIR)/native_runtime/build $(BIN)/python bench/run.py

$(BIN)/.bench-installed: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

# Every security corpus whole (SECURITY.md): the deep hypothesis profile, against a real Envoy.
security: $(BIN)/.installed
	HYPOTHESIS_PROFILE=deep $(BIN)/pytest tests/security tests/unit/test_cases.py \
		tests/envoy/test_cases_envoy.py tests/envoy/test_paths_envoy.py

# The deep differential run (tests/README.md, *The differential suite*): 1,000 generated policies
# through Envoy as a process and 300 in a container, 300 over TLS with client certificates, 500 of
# gRPC calls; about an hour and a half on a 2-core machine.
differential: $(BIN)/.installed
	POLICYC_DIFF_POLICIES=1000 POLICYC_DIFF_CONTAINER_POLICIES=300 POLICYC_PEER_POLICIES=300 \
		POLICYC_GRPC_DIFF_POLICIES=500 $(BIN)/pytest tests/differential tests/grpc/test_grpc_differential.py

# The deep fuzz run: 1,000 examples per fuzz test, 95,000 for the parser and formatter (>100,000 inputs).
fuzz: $(BIN)/.installed
	POLICYC_FUZZ_EXAMPLES=1000 HYPOTHESIS_PROFILE=deep $(BIN)/pytest tests/fuzz -q

# The native policy filter, an Envoy dynamic module: native_runtime/build/libpolicyc_native.so (gcc).
native:
	$(MAKE) -C native_runtime

lint: $(BIN)/.installed
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache native_runtime/build
