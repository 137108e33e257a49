# Two commands on a fresh machine with Python 3.11: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8080

.PHONY: install run test lint bench fuzz compose-check clean

install: $(VENV)/.installed

# -qq: pip's own warnings too (a machine's pip configuration may add a screenful of them).
$(VENV)/.installed: pyproject.toml
	@echo "Installing into $(VENV) (the first time only: about a minute)..."
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -qq --disable-pip-version-check -e '.[test]'
	touch $@

run: install
	$(PY) -m service dev --host 127.0.0.1 --port $(PORT)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[bench]'
	$(PY) -m bench
# A long schemathesis run against /openapi.json (the suite runs a short one): FUZZ_EXAMPLES
# examples per operation and mode.
fuzz: install
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-1000} $(PY) -m pytest tests/http/test_fuzz.py -q $(PYTEST_ARGS)

# docker-compose.yml run for real with podman and local stand-in images (deploy/README.md).
compose-check:
	$(PYTHON) deploy/compose_check.py

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .data .pytest_cache
