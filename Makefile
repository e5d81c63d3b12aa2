# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup demo test test-slow bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[cpu,test]"
	touch $(STAMP)

DEMO_SEARCH := --space mini_bottlenecks --budget-params 100k --max-trials 4 --epochs 3 \
	--optimizer adam --learning-rate 0.003 --no-ema --dir runs/demo_search --overwrite

demo: setup
	$(BIN)/inception-keras demo
	@echo "== 5. budgeted architecture search: googlenet_mini bottlenecks under 100k params (4 trials)"
	$(BIN)/inception-keras search $(DEMO_SEARCH)

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

bench: setup
	$(BIN)/python benchmarks/bench_cost.py
	$(BIN)/python benchmarks/bench_search.py
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
