# Sluice — the commands people type. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: ## Run the dev stack: embedded Kafka-protocol broker, ingest on :8090, gateway on :8080 (no Docker; ARGS="--gateways 2")
	$(CARGO) run -p sluice-dev -- $(ARGS)

.PHONY: build
build: ## Build every binary (debug)
	$(CARGO) build --workspace --bins

.PHONY: release
release: ## Build every binary (release)
	$(CARGO) build --release --workspace --bins

.PHONY: test
test: build test-deps ## Run every test: unit, service, end-to-end and real-browser (embedded broker; SLUICE_TEST_KAFKA_BROKERS=host:port for a real one), then the Kubernetes and Compose checks
	$(CARGO) test --workspace --no-fail-fast
	$(MAKE) --no-print-directory test-k8s
	$(MAKE) --no-print-directory test-compose

.PHONY: test-deps
test-deps: ## Install what the tests run besides cargo: Debian's chromium, Node.js, curl, python3 (apt) and npm's playwright-core
	bash tests/install-deps.sh

# Python tools for the Kubernetes checks, in a virtualenv under target/ (installed once).
PY_ENV := target/py
PY := $(PY_ENV)/bin/python

$(PY):
	python3 -m venv $(PY_ENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --ignore-requires-python helm-sdkpy kubernetes-validate pyyaml

.PHONY: test-k8s
test-k8s: build $(PY) ## Lint and render the Helm chart and k8s/ manifests, validate them against Kubernetes schemas and check them against the binaries
	SLUICE_BIN_DIR=target/debug $(PY) tests/k8s/check_manifests.py
	@if [ -f tests/k8s/check_chart.py ]; then SLUICE_BIN_DIR=target/debug $(PY) tests/k8s/check_chart.py; fi

.PHONY: test-compose
test-compose: build $(PY) ## Check docker-compose.yml, the Dockerfile and deploy/compose/ without Docker (env names against --help, ports, nginx SSE settings, Prometheus targets)
	SLUICE_BIN_DIR=target/debug $(PY) tests/compose/check_compose.py

# The local stack with Apache Kafka in Docker (docker-compose.yml, docs/compose.md).
COMPOSE ?= docker compose
define need_docker
	@docker info >/dev/null 2>&1 || { echo "make $@: no Docker engine answers (docker info failed); start Docker and retry" >&2; exit 1; }
	@$(COMPOSE) version >/dev/null 2>&1 || { echo "make $@: Docker Compose v2 not found ($(COMPOSE) version failed)" >&2; exit 1; }
endef

.PHONY: up
up: ## Build the images and run the stack with Apache Kafka in Docker: nginx :8080, ingest :8090, Prometheus :9095, Kafka :9092
	$(need_docker)
	$(COMPOSE) up --build --wait
	@echo "SLUICE_URL=http://127.0.0.1:8080          (nginx: GET /v1/streams/{stream} → gateways, POST /v1/streams/{stream}/events → ingest)"
	@echo "INGEST_URL=http://127.0.0.1:8090          (ingest, direct)"
	@echo "PROMETHEUS_URL=http://127.0.0.1:9095"
	@echo "KAFKA_BOOTSTRAP=localhost:9092            (producers on this host)"
	@echo "Streams: demo, ticker. Try: curl -N http://127.0.0.1:8080/v1/streams/demo  (docs/compose.md)"

.PHONY: down
down: ## Stop the Docker stack and delete its data (volumes included)
	$(need_docker)
	$(COMPOSE) down -v

.PHONY: test-testcontainers
test-testcontainers: build ## Run the tests against Apache Kafka started by testcontainers (needs a Docker engine)
	@if ! docker info >/dev/null 2>&1; then echo "skipped: no Docker (no Docker engine answers; nothing was run)"; exit 0; fi; \
	SLUICE_TEST_KAFKA=testcontainers $(CARGO) test --workspace --no-fail-fast

.PHONY: lint
lint: ## Check formatting and clippy (warnings are errors)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: bench-ingest
bench-ingest: ## Benchmark ingest on the embedded broker: events/s and latency, single events and batches of 100
	$(CARGO) build --release -p sluice-dev -p sluice-bench
	target/release/sluice-bench ingest --json target/bench-ingest.json $(ARGS)

BENCH_BINS := -p sluice-dev -p sluice-ingest -p sluice-gateway -p sluice-bench

.PHONY: bench-idle
bench-idle: ## Benchmark memory per idle SSE connection (10,000 connections on one gateway process)
	$(CARGO) build --release $(BENCH_BINS)
	target/release/sluice-bench idle --json target/bench-idle.json $(ARGS)

.PHONY: bench-fanout
bench-fanout: ## Benchmark deliveries/s broadcasting 100 events/s to 10,000 connections
	$(CARGO) build --release $(BENCH_BINS)
	target/release/sluice-bench fanout --json target/bench-fanout.json $(ARGS)

.PHONY: bench-latency
bench-latency: ## Benchmark publish → receive latency at 1,000 events/s to 1,000 subscribers
	$(CARGO) build --release $(BENCH_BINS)
	target/release/sluice-bench latency --json target/bench-latency.json $(ARGS)

.PHONY: ci
ci: ## What CI runs: .ci/run
	bash .ci/run

.PHONY: clean
clean: ## Remove build output
	$(CARGO) clean
