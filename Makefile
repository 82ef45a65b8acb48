# `make test` and `make demo` set up .venv themselves; nothing else needs installing by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXAMPLE := envoy_configs/examples/backstage

.PHONY: test demo bench fuzz lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/pytest

demo: $(BIN)/.installed
	$(BIN)/python -m policyc.demo $(EXAMPLE)

bench: $(BIN)/.installed
	$(BIN)/python bench/interpreter.py

# The deep fuzz run: 1,000 examples per fuzz test, 95,000 for the parser and formatter (>100,000 inputs).
fuzz: $(BIN)/.installed
	POLICYC_FUZZ_EXAMPLES=1000 HYPOTHESIS_PROFILE=deep $(BIN)/pytest tests/fuzz -q

lint: $(BIN)/.installed
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache
