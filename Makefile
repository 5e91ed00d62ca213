# onion-of-experts: one target per habit. `make demo` runs the main job; `make test` the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help install bins engine test test-unit test-image fuzz chaos lint fmt generate generate-check cluster-up cluster-down demo image kind-demo bench bench-idle bench-wake bench-scale bench-scale-ab bench-router bench-instructions bench-ab bench-quality bench-embedding bench-bargain clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed  ## Python environment with the product and dev tools

bins:  ## build (or reuse) the pinned Kubernetes, etcd, kwok and helm binaries, and the published CRDs tests install
	bash hack/build-cluster-bins.sh
	bash hack/fetch-crds.sh gateway-api >/dev/null
	bash hack/fetch-crds.sh prometheus-operator >/dev/null

engine: install  ## llama.cpp's llama-server and the real model ladder (built/assembled once, cached)
	bash hack/install-engine.sh $(PY)

test: install bins engine  ## all tests but the image's: unit, integration (real API server), end-to-end
	$(PY) -m pytest tests --ignore=tests/image

test-image: install image  ## build the image (buildah where no engine runs) and test it: its router answers
	$(PY) -m pytest tests/image

test-unit: install  ## pure tests only (seconds)
	$(PY) -m pytest tests/unit

fuzz: install bins  ## long fuzzing (fresh randomness): router routes (N=3000 each) and Onion specs (ONIONS=300)
	HYPOTHESIS_PROFILE=fuzz ONION_FUZZ_EXAMPLES=$${N:-3000} ONION_FUZZ_ONIONS=$${ONIONS:-300} \
	  $(PY) -m pytest -p no:cacheprovider tests/integration/test_router_fuzz.py tests/integration/test_onion_fuzz.py

chaos: install bins  ## the chaos campaign at length (30 operator kills, router and control-plane restarts); results/chaos.json
	@# The campaign is tests/integration/test_chaos.py at length: it runs the test model servers.
	ONION_CHAOS_OPERATOR_CYCLES=$${CYCLES:-30} ONION_CHAOS_ROUTER_TRIALS=$${ROUTER_TRIALS:-10} \
	  ONION_CHAOS_RESTART_TRIALS=$${RESTART_TRIALS:-6} ONION_CHAOS_SEED=$${SEED:-1} \
	  ONION_CHAOS_REPORT=results/chaos.json \
	  $(PY) -m pytest -p no:cacheprovider -s tests/integration/test_chaos.py

lint: install generate-check  ## ruff, mypy (strict), import contracts, no stale generated file
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	cd bench/loadgen && test -z "$$(gofmt -l .)" && go vet .

generate: install  ## write the CRD (and the chart's copy) and the RBAC rules from contract/onion_contract
	$(PY) -m onion_contract.generate

generate-check: install  ## fail if a generated file differs from what `make generate` writes
	$(PY) -m onion_contract.generate --check

fmt: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

cluster-up: install bins  ## start the local control plane on 127.0.0.1; prints the KUBECONFIG
	$(PY) -m onion_lab.localcluster up

cluster-down:  ## stop it
	$(PY) -m onion_lab.localcluster down

demo: install bins engine  ## the main job on one machine (about a minute; see README)
	$(PY) demo/run_demo.py

image:  ## container image (operator + router): docker or podman, else buildah (see docs/install.md)
	bash hack/build-image.sh

kind-demo:  ## the same on kind with the real image (needs docker + kind; not runnable here)
	bash hack/kind-demo.sh

bench: bench-idle bench-wake bench-scale bench-router bench-instructions bench-embedding  ## all benchmarks; results as JSON under results/

bench-idle: install  ## replay a real trace through the planner: GPU-hours vs cold starts per idle policy (fixed, adaptive, schedules), 4 tenant sizes, frontier PNG (about 2 min; TRACE=FILE KEEP_EVERY=5,20)
	$(PY) -m pip install -q 'matplotlib>=3.8'
	$(PY) bench/idle_policy.py $(if $(TRACE),--trace $(TRACE),) $(if $(KEEP_EVERY),--keep-every $(KEEP_EVERY),)

bench-wake: install bins  ## operator wake latency on the local cluster
	$(PY) bench/wake_latency.py

bench-scale: install bins  ## 100, 300, 1,000 and 3,000 Onions on one operator: requests at rest, wake, sleep, a kill -9 restart and the wakes after it (about 50 min; ONIONS="100 300")
	$(PY) bench/scale.py $(if $(ONIONS),--onions $(ONIONS),)

bench-scale-ab: install bins  ## another checkout's operator in the same scale run (1,000 and 3,000 Onions), then the restart plotted beside results/scale.json: make bench-scale-ab SOURCE=DIR/operator
	@test -n "$(SOURCE)" || { echo "usage: make bench-scale-ab SOURCE=path/to/other/checkout/operator"; exit 2; }
	$(PY) -m pip install -q 'matplotlib>=3.8'
	$(PY) bench/scale.py --onions $(or $(ONIONS),1000 3000) --operator-source $(SOURCE) \
	  --label "$(SOURCE)" --out results/scale-restart-before.json
	$(PY) bench/scale_restart_plot.py results/scale-restart-before.json results/scale.json

bench-router: install  ## router overhead vs direct vs LiteLLM
	@# LiteLLM gets its own venv: its pins (huggingface-hub<2, ...) would break ours.
	L=$${ONION_CACHE_DIR:-$$HOME/.cache/onion-of-experts}/litellm-venv; \
	  test -x $$L/bin/litellm || { $(PYTHON) -m venv $$L && $$L/bin/pip install -q 'litellm[proxy]'; } && \
	  $(PY) bench/router_overhead.py --litellm $$L/bin/litellm --out results/router-overhead.json

bench-instructions: install  ## router instructions per request under callgrind (needs valgrind)
	$(PY) bench/router_instructions.py

bench-quality: install  ## the bargain from the answer bank: test-split figures, intervals, p-values (minutes); RECORD=1 first records what the bank lacks (hours; SIZES=gsm8k=250,humaneval=164,boolq=400)
	$(PY) -m pip install -q 'matplotlib>=3.8'
ifdef RECORD
	$(MAKE) engine
	$(PY) bench/quality.py record $(if $(SIZES),--sizes $(SIZES),)
endif
	$(PY) bench/quality.py analyse

bench-bargain: install  ## the whole bargain: a real trace of bank questions, every escalation x idle policy simulated (about 1 min), a slice replayed live through the real router and operator (about 15 min; LIVE=0 skips it; TRACE=FILE KEEP_EVERY=N MIX=gsm8k:0.4,... OUT=FILE)
	$(PY) -m pip install -q 'matplotlib>=3.8'
ifneq ($(LIVE),0)
	$(MAKE) bins
endif
	$(PY) bench/bargain.py $(if $(TRACE),--trace $(TRACE),) $(if $(KEEP_EVERY),--keep-every $(KEEP_EVERY),) \
	  $(if $(MIX),--mix $(MIX),) $(if $(OUT),--out $(OUT),) $(if $(filter 0,$(LIVE)),--no-live,)

bench-embedding: install  ## the learned policies' prompt embedder: latency p50/p99 at 16, 64, 256 tokens (one thread, default threads) and installed size, beside the alternatives measured once (about 3 min)
	$(PY) -m onion_lab.embedder_files > /dev/null
	$(PY) bench/embedding.py

bench-ab: install  ## this router's added latency beside another checkout's: make bench-ab SOURCE=DIR/router
	@test -n "$(SOURCE)" || { echo "usage: make bench-ab SOURCE=path/to/other/checkout/router"; exit 2; }
	$(PY) bench/router_ab.py --source $(SOURCE)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
