# hwnas: the two commands a newcomer needs are `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HWNAS := $(VENV)/bin/hwnas

.PHONY: setup demo test bench lint readme clean

# torch==2.13.0 goes in FIRST: it is the CPU build; any other torch request pulls a CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[mobile,dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(HWNAS) demo

test: setup
	$(PY) -m pytest -q

# every benchmark behind the README's performance tables (about two hours on 2 cores)
bench: setup
	$(PY) benchmarks/profiling_cost.py
	$(PY) benchmarks/repeatability.py
	$(PY) benchmarks/predictor_accuracy.py
	$(PY) benchmarks/external.py
	$(PY) benchmarks/out_of_space.py --profile profiles/ort-cpu-1t-proxyless-224
	$(PY) benchmarks/supernet_memory.py
	$(PY) benchmarks/search_budget.py
	$(PY) benchmarks/export.py

# the README's result blocks from benchmarks/results/*.md (never typed by hand)
readme: setup
	$(PY) benchmarks/readme.py

# ruff, and the import contract (pyproject.toml [tool.importlinter]): layers import one way
lint: setup
	$(VENV)/bin/ruff check hwnas tests benchmarks
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) build dist .pytest_cache runs artifacts
