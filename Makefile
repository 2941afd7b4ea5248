# fastingress: the two commands a fresh machine needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test lint unit integration e2e demo bench bench-quick bench-table clean docs-config

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check fastingress workers tests loadtest
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy --strict fastingress workers

test: lint
	$(PY) -m pytest -q tests

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

demo: $(STAMP)
	$(VENV)/bin/fastingress demo

# side by side with nginx and haproxy (needs: apt-get install nginx-light haproxy wrk util-linux gcc);
# BENCH_PYTHON: the interpreter that runs fastingress (a PGO/LTO build, as production images ship)
BENCH_PYTHON ?= $(PY)
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m loadtest --python $(BENCH_PYTHON) $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m loadtest --quick --python $(BENCH_PYTHON)

bench-table: $(STAMP)
	$(PY) -m loadtest.bench_table

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
