# onion-of-experts: one target per habit. `make demo` runs the main job; `make test` the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help install bins engine test test-unit lint fmt cluster-up cluster-down demo image kind-demo bench bench-idle bench-wake bench-router bench-instructions bench-ab bench-quality clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed  ## Python environment with the product and dev tools

bins:  ## build (or reuse) the pinned Kubernetes, etcd, kwok and helm binaries
	bash hack/build-cluster-bins.sh

engine: install  ## llama.cpp's llama-server and the real model ladder (built/assembled once, cached)
	bash hack/install-engine.sh $(PY)

test: install bins engine  ## all tests: unit, integration (real API server), end-to-end
	$(PY) -m pytest tests

test-unit: install  ## pure tests only (seconds)
	$(PY) -m pytest tests/unit

lint: install  ## ruff, mypy (strict), import contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	cd bench/loadgen && test -z "$$(gofmt -l .)" && go vet .

fmt: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

cluster-up: install bins  ## start the local control plane on 127.0.0.1; prints the KUBECONFIG
	$(PY) hack/localcluster.py up

cluster-down:  ## stop it
	$(PY) hack/localcluster.py down

demo: install bins engine  ## the main job on one machine (about a minute; see README)
	$(PY) demo/run_demo.py

image:  ## container image (operator + router) with docker or podman, where one exists
	bash hack/build-image.sh

kind-demo:  ## the same on kind with the real image (needs docker + kind; not runnable here)
	bash hack/kind-demo.sh

bench: bench-idle bench-wake bench-router bench-instructions  ## all benchmarks; results as JSON under results/

bench-idle: install  ## replay a real trace through the planner: GPU-hours vs cold starts per idle policy
	$(PY) bench/idle_policy.py

bench-wake: install bins  ## operator wake latency on the local cluster
	$(PY) bench/wake_latency.py

bench-router: install  ## router overhead vs direct vs LiteLLM
	@# LiteLLM gets its own venv: its pins (huggingface-hub<2, ...) would break ours.
	L=$${ONION_CACHE_DIR:-$$HOME/.cache/onion-of-experts}/litellm-venv; \
	  test -x $$L/bin/litellm || { $(PYTHON) -m venv $$L && $$L/bin/pip install -q 'litellm[proxy]'; } && \
	  $(PY) bench/router_overhead.py --litellm $$L/bin/litellm --out results/router-overhead.json

bench-instructions: install  ## router instructions per request under callgrind (needs valgrind)
	$(PY) bench/router_instructions.py

bench-quality: install engine  ## the bargain on the real ladder: accuracy vs escalation, cost, APGR (FULL=1: whole sets; LIMIT=gsm8k=10,...)
	$(PY) -m pip install -q 'matplotlib>=3.8'
	$(PY) bench/quality.py $(if $(FULL),--full,) $(if $(LIMIT),--limit $(LIMIT),)

bench-ab: install  ## this router's added latency beside another checkout's: make bench-ab SOURCE=DIR/router
	@test -n "$(SOURCE)" || { echo "usage: make bench-ab SOURCE=path/to/other/checkout/router"; exit 2; }
	$(PY) bench/router_ab.py --source $(SOURCE)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
