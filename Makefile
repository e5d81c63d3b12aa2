# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

REF_VENV := .venv-ref
REF_STAMP := $(REF_VENV)/.installed
REFERENCE_DIR := runs/verify-weights

.PHONY: setup demo test test-slow bench bench-peer bench-gpu bench-ranking bench-deploy bench-latency bench-frontier bench-elastic \
	bench-report verify-weights clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[cpu,test]"
	touch $(STAMP)

DEMO_SEARCH := --space cluttered_widths --dataset cluttered_digits --budget-latency 1x --runtime onnxruntime \
	--max-trials 8 --parent runs/demo --steps 0 --dir runs/demo_search --overwrite

demo: setup
	$(BIN)/inception-keras demo
	@echo "== 5. budgeted architecture search: googlenet_mini's widths under half its multiply-adds (the space's budget) and its latency in ONNX Runtime on this machine (predicted, then measured; 8 trials and the width-multiplier baseline), each inheriting the weights of the model trained above, ranked after batch-norm recalibration"
	$(BIN)/inception-keras search $(DEMO_SEARCH)

test: setup
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=25

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

bench: bench-peer
	$(BIN)/python benchmarks/bench_cost.py
	$(BIN)/python benchmarks/bench_search.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_input.py

# Keras against torchvision in one run (torch from .venv-ref), and the cost of LRN.
bench-peer: setup $(REF_STAMP)
	$(BIN)/python benchmarks/bench_peer.py --memory --jit
	$(BIN)/python benchmarks/bench_lrn.py

# Ranking fidelity of the search's proxies (from scratch, inherited from a parent) against long training, on
# cluttered_digits: about an hour on 2 cores; writes benchmarks/results/bench_ranking.json.
bench-ranking: setup
	$(BIN)/python benchmarks/bench_ranking.py

# Inference of googlenet_torchvision in every export format (float32 and int8) against torchvision (torch from
# .venv-ref): a few minutes on 2 cores; writes benchmarks/results/bench_deploy.json.
bench-deploy: setup $(REF_STAMP)
	$(BIN)/python benchmarks/bench_deploy.py

# The latency predictor against measurement on held-out candidates, in ONNX Runtime: googlenet_mini at 32 px and
# googlenet at 224 px (~15 min on 2 cores); writes benchmarks/results/bench_latency.json.
bench-latency: setup
	$(BIN)/python benchmarks/bench_latency.py

# Does the search beat the width multiplier under latency budgets on cluttered_digits, and how well do its proxies
# rank candidates of equal cost? (~1.5 h on 2 cores); writes benchmarks/results/bench_frontier.json.
bench-frontier: setup
	$(BIN)/python benchmarks/bench_frontier.py

# An elastic googlenet_mini (train --elastic) against the same networks trained alone on cluttered_digits (~30 min;
# after bench-frontier, whose iso-cost references it ranks against).
bench-elastic: setup
	$(BIN)/python benchmarks/bench_elastic.py

# docs/benchmarks.md, generated from the results the benchmarks above wrote (benchmarks/results/*.json).
bench-report: setup
	$(BIN)/python benchmarks/report.py

# The same comparison on a GPU machine (torch + torchvision with CUDA, JAX, Keras and PyYAML importable by
# $(PYTHON); no TensorFlow, no venv): torch autocast bf16 + channels_last against Keras on JAX, mixed_bfloat16.
bench-gpu:
	PYTHONPATH=. $(PYTHON) benchmarks/bench_peer.py --device gpu --precisions bf16 --memory \
		--keras-python $(PYTHON) --peer-python $(PYTHON)

# The reference frameworks, in a venv of their own (~7 GB): torch + torchvision (also the peer of bench-peer),
# TF-slim (with the tf-keras it needs), OpenCV's Caffe reader, protoc for BVLC's caffe.proto.
$(REF_STAMP):
	test -x $(REF_VENV)/bin/python || $(PYTHON) -m venv $(REF_VENV)
	$(REF_VENV)/bin/pip install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 \
		"opencv-python-headless>=4.8,<5" tf-slim==1.1.0 tensorflow==2.21.0 tf-keras==2.21.0 grpcio-tools numpy
	touch $(REF_STAMP)

# Live cross-framework check: the frameworks write weights files and their own outputs; we read the files and compare.
verify-weights: setup $(REF_STAMP)
	$(REF_VENV)/bin/python tests/reference/make_reference.py $(REFERENCE_DIR)
	REFERENCE_DIR=$(REFERENCE_DIR) $(BIN)/python -m pytest -q -s -m verify tests/pretrained/test_pretrained_live.py

clean:
	rm -rf $(VENV) $(REF_VENV) .pytest_cache .hypothesis
