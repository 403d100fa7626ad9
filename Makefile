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

# every benchmark behind the README's tables (about four hours on 2 cores), each writing
# benchmarks/results/NAME.{md,json}; timing ones run alone under the CPU lock; then `make readme`.
# (gpu_check needs a CUDA GPU: `python benchmarks/gpu_check.py` on one; ray_scale needs Ray:
# `pip install -e '.[distributed]'`, then `flock /tmp/hwnas_cpu.lock python benchmarks/ray_scale.py`.)
LOCK := flock /tmp/hwnas_cpu.lock
bench: setup
	$(LOCK) $(PY) benchmarks/profiling_cost.py
	$(LOCK) $(PY) benchmarks/repeatability.py
	$(LOCK) $(PY) benchmarks/predictor_accuracy.py
	$(PY) benchmarks/external.py
	$(LOCK) $(PY) benchmarks/out_of_space.py
	$(LOCK) $(PY) benchmarks/supernet_memory.py
	$(PY) benchmarks/tabular_search.py
	$(LOCK) $(PY) benchmarks/nb201_own_cpu.py
	$(PY) benchmarks/supernet_ranking.py --space nb201
	$(PY) benchmarks/supernet_ranking.py --space proxyless --data digits --archs 20 --seeds 2 --standalone-epochs 6
	$(PY) benchmarks/search_budget.py
	$(PY) benchmarks/zero_cost.py --threads 2
	$(PY) benchmarks/shiftnas.py
	$(PY) benchmarks/fbnetv5.py
	nice $(PY) benchmarks/few_shot.py
	$(LOCK) $(PY) benchmarks/export.py
	nice -n 10 $(LOCK) $(PY) benchmarks/adapt_transfer.py
	nice -n 10 $(LOCK) $(PY) benchmarks/crash_loop.py
	$(PY) benchmarks/bad_input.py
	$(PY) benchmarks/readme.py

# the README's result blocks from benchmarks/results/*.md (never typed by hand)
readme: setup
	$(PY) benchmarks/readme.py

# ruff, and the import contract (pyproject.toml [tool.importlinter]): layers import one way
lint: setup
	$(VENV)/bin/ruff check hwnas tests benchmarks
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) build dist .pytest_cache runs artifacts
