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

# Python tools for the Kubernetes and Compose checks, in a virtualenv under target/ (installed
# once per package list: the stamp's name changes with the list, so an added package installs).
PY_ENV := target/py
PY := $(PY_ENV)/bin/python
PY_PACKAGES := helm-sdkpy kubernetes-validate pyyaml pyjwt
PY_READY := $(PY_ENV)/.ready-$(shell echo '$(PY_PACKAGES)' | cksum | cut -d' ' -f1)

$(PY_READY):
	python3 -m venv $(PY_ENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --ignore-requires-python $(PY_PACKAGES)
	touch $@

.PHONY: test-k8s
test-k8s: build $(PY_READY) ## Lint and render the Helm chart and k8s/ manifests, validate them against Kubernetes schemas and check them against the binaries
	SLUICE_BIN_DIR=target/debug $(PY) tests/k8s/check_manifests.py
	@if [ -f tests/k8s/check_chart.py ]; then SLUICE_BIN_DIR=target/debug $(PY) tests/k8s/check_chart.py; fi

.PHONY: test-compose
test-compose: build $(PY_READY) ## Check docker-compose.yml, the Dockerfile and deploy/compose/ without Docker (env names against --help, ports, nginx SSE settings, Prometheus targets)
	SLUICE_BIN_DIR=target/debug $(PY) tests/compose/check_compose.py

# The local stack with Apache Kafka in Docker (docker-compose.yml, docs/compose.md).
COMPOSE ?= docker compose
define need_docker
	@docker info >/dev/null 2>&1 || { echo "make $@: no Docker engine answers (docker info failed); start Docker and retry" >&2; exit 1; }
	@$(COMPOSE) version >/dev/null 2>&1 || { echo "make $@: Docker Compose v2 not found ($(COMPOSE) version failed)" >&2; exit 1; }
endef

.PHONY: up
up: ## Build the images and run the stack with Apache Kafka in Docker: nginx :8080, ingest :8090, Prometheus :9095, Grafana :3000, Kafka :9092
	$(need_docker)
	$(COMPOSE) up --build --wait
	@echo "SLUICE_URL=http://127.0.0.1:8080          (nginx: GET /v1/streams/{stream} → gateways, POST /v1/streams/{stream}/events → ingest)"
	@echo "INGEST_URL=http://127.0.0.1:8090          (ingest, direct)"
	@echo "PROMETHEUS_URL=http://127.0.0.1:9095"
	@echo "GRAFANA_URL=http://127.0.0.1:3000           (dashboards: folder Sluice)"
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

# Fuzzing (cargo-fuzz: `cargo install cargo-fuzz`). Not part of `make test`: each target runs for
# FUZZ_SECONDS. cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 unlocks them on the
# pinned stable toolchain. Findings land in the target's fuzz/artifacts/. FUZZ_TIME is the
# older name of FUZZ_SECONDS.
FUZZ_TIME ?= 600
FUZZ_SECONDS ?= $(FUZZ_TIME)
FUZZ := RUSTC_BOOTSTRAP=1 $(CARGO) fuzz
# The services link librdkafka, whose build runs `configure` link tests with plain gcc; under
# AddressSanitizer the C dependencies (zstd) are compiled with -fsanitize=address and those tests
# fail to link. Their targets run with coverage-guided fuzzing and Rust's own checks (panics,
# overflow, bounds) but no ASan: the code they reach is safe Rust (`unsafe_code = "forbid"`).
FUZZ_NO_ASAN := --sanitizer none

.PHONY: fuzz
fuzz: fuzz-sse fuzz-gateway fuzz-ingest ## Run every fuzz target for FUZZ_SECONDS each (default 600; needs cargo-fuzz); not part of make test

.PHONY: fuzz-gateway
fuzz-gateway: ## Fuzz the gateway's request parsing (query, since, Last-Event-ID) for FUZZ_SECONDS
	cd services/gateway && $(FUZZ) run $(FUZZ_NO_ASAN) request -- -max_total_time=$(FUZZ_SECONDS)

.PHONY: fuzz-sse
fuzz-sse: ## Fuzz the SSE cursor decoder for FUZZ_SECONDS
	cd libs/sluice-sse && $(FUZZ) run cursor_decode -- -max_total_time=$(FUZZ_SECONDS)

.PHONY: fuzz-ingest
fuzz-ingest: ## Fuzz ingest's body parser (JSON and NDJSON, default and tiny limits) for FUZZ_SECONDS
	cd services/ingest && $(FUZZ) run $(FUZZ_NO_ASAN) parse_body -- -max_total_time=$(FUZZ_SECONDS)

.PHONY: lint
lint: ## Check formatting and clippy (warnings are errors)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

# Benchmarks. Each scenario writes its JSON result under target/bench/; `make bench-report`
# turns them into BENCHMARKS.md (tools/sluice-bench/BENCHMARKS.template.md holds the prose).
# Flags go through ARGS, e.g. make bench-fanout ARGS="--connections 5000 --publish-via kafka".
BENCH_BINS := -p sluice-dev -p sluice-ingest -p sluice-gateway -p sluice-bench
BENCH := target/release/sluice-bench
BENCH_DIR := target/bench
# Rates of the latency sweep: 5,000 subscribers each, 10 s per rate.
LATENCY_SWEEP_RATES ?= 10 20 50 100 200

.PHONY: bench-build
bench-build: ## Build the release binaries the benchmarks run
	$(CARGO) build --release $(BENCH_BINS)
	@mkdir -p $(BENCH_DIR)

.PHONY: bench-ingest
bench-ingest: bench-build ## Benchmark ingest on the embedded broker: events/s and latency, single events and batches of 100
	$(BENCH) ingest --json $(BENCH_DIR)/ingest.json $(ARGS)

.PHONY: bench-idle
bench-idle: bench-build ## Idle: 15,000 SSE connections on one gateway for 60 s: bytes per connection (user, kernel), idle CPU
	$(BENCH) idle --json $(BENCH_DIR)/idle.json $(ARGS)

.PHONY: bench-fanout
bench-fanout: bench-build ## Fan-out: 100 events/s broadcast to 10,000 connections (1M deliveries/s offered; aim >= 500k/s)
	$(BENCH) fanout --json $(BENCH_DIR)/fanout.json $(ARGS)

.PHONY: bench-fanout-kafka
bench-fanout-kafka: bench-build ## Fan-out with the events written straight to Kafka (an rdkafka producer) instead of through ingest
	$(BENCH) fanout --publish-via kafka --json $(BENCH_DIR)/fanout-kafka.json $(ARGS)

.PHONY: bench-latency
bench-latency: bench-build ## Latency: publish -> receive at 1,000 events/s to 1,000 subscribers
	$(BENCH) latency --json $(BENCH_DIR)/latency.json $(ARGS)

.PHONY: bench-latency-aim
bench-latency-aim: bench-build ## Latency at the aim's point: 5,000 events/s x 5,000 subscribers (25M deliveries/s offered), 5 s
	$(BENCH) latency --connections 5000 --rate 5000 --duration 5s --drain 15s --json $(BENCH_DIR)/latency-aim.json $(ARGS)

.PHONY: bench-latency-sweep
bench-latency-sweep: bench-build ## Latency with 5,000 subscribers at LATENCY_SWEEP_RATES events/s: where p99 <= 20 ms holds
	@for rate in $(LATENCY_SWEEP_RATES); do \
	  $(BENCH) latency --connections 5000 --rate $$rate --duration 10s --json $(BENCH_DIR)/latency-sweep-$$rate.json $(ARGS) || exit 1; \
	done

.PHONY: bench-keyed
bench-keyed: bench-build ## Keyed: 10,000 connections each on its own key, 5,000 events/s over the keys: key index cost per event
	$(BENCH) keyed --json $(BENCH_DIR)/keyed.json $(ARGS)

.PHONY: bench-reconnect
bench-reconnect: bench-build ## Reconnect storm: 10,000 clients on gateway A, A SIGKILLed, all resume on B with Last-Event-ID
	$(BENCH) reconnect --json $(BENCH_DIR)/reconnect.json $(ARGS)

.PHONY: bench-streams
bench-streams: bench-build ## Streams: 1, 100 and 1,000 streams on one gateway, one subscriber each: threads, RSS, broker connections, time to open
	$(BENCH) streams --timeout 30m --json $(BENCH_DIR)/streams.json $(ARGS)

.PHONY: bench-multistream
bench-multistream: bench-build ## Several streams per connection: 5,000 connections x 4 streams against 20,000 single-stream ones, same deliveries, same run
	$(BENCH) multistream --json $(BENCH_DIR)/multistream.json $(ARGS)

.PHONY: bench-multistream-small
bench-multistream-small: bench-build ## The same comparison at 1,000 connections x 4 streams against 4,000
	$(BENCH) multistream --connections 1000 --json $(BENCH_DIR)/multistream-small.json $(ARGS)

.PHONY: bench-longpoll
bench-longpoll: bench-build ## Long polling: 1,000 clients looping GET /v1/streams/{s}/poll?wait=10&cursor=... at 10 events/s: polls/s, event age, losses
	$(BENCH) longpoll --json $(BENCH_DIR)/longpoll.json $(ARGS)

# Access control's cost (issue 10): the same scenarios with --auth none, hs256 and rs256; each
# mode's JSON goes to target/bench/auth/<scenario>-<mode>.json. Sizes through ARGS, e.g.
# make bench-idle-auth ARGS="--connections 5000 --hold 30s".
BENCH_AUTH_DIR := $(BENCH_DIR)/auth

.PHONY: bench-idle-auth
bench-idle-auth: bench-build ## Idle memory per connection and idle CPU with --auth none, hs256 and rs256 (a token per connection)
	@mkdir -p $(BENCH_AUTH_DIR)
	@for mode in none hs256 rs256; do \
	  $(BENCH) idle --auth $$mode --json $(BENCH_AUTH_DIR)/idle-$$mode.json $(ARGS) || exit 1; \
	done

.PHONY: bench-fanout-auth
bench-fanout-auth: bench-build ## Fan-out CPU per 1M deliveries with --auth none, hs256 and rs256
	@mkdir -p $(BENCH_AUTH_DIR)
	@for mode in none hs256 rs256; do \
	  $(BENCH) fanout --auth $$mode --json $(BENCH_AUTH_DIR)/fanout-$$mode.json $(ARGS) || exit 1; \
	done

.PHONY: bench-reconnect-auth
bench-reconnect-auth: bench-build ## Reconnect storm without auth, then with RS256 tokens sent on every reconnect
	@mkdir -p $(BENCH_AUTH_DIR)
	@for mode in none rs256; do \
	  $(BENCH) reconnect --auth $$mode --json $(BENCH_AUTH_DIR)/reconnect-$$mode.json $(ARGS) || exit 1; \
	done

.PHONY: bench-auth-verify
bench-auth-verify: ## µs per token verification through sluice-auth, by algorithm (HS256, RS256, ES256, EdDSA)
	$(CARGO) run --release -p sluice-auth --example verify_bench

.PHONY: bench-auth
bench-auth: bench-auth-verify bench-idle-auth bench-fanout-auth bench-reconnect-auth ## Every access-control comparison above
	@echo "results: $(BENCH_AUTH_DIR)/*.json"

.PHONY: bench-catchup
bench-catchup: bench-build ## Catch-up: one client resuming 1,000,000 events behind (backlog straight to Kafka): events/s until live
	$(BENCH) catchup --publish-via kafka --json $(BENCH_DIR)/catchup.json $(ARGS)

.PHONY: bench-hostile
bench-hostile: bench-build ## Hostile: 20 never-reading clients on 100 KB and on 900 KB events beside 50 normal subscribers: gateway RSS per stalled client, normal p50/p99 and losses
	$(BENCH) hostile --payload-bytes 100000 --json $(BENCH_DIR)/hostile-100k.json $(ARGS)
	$(BENCH) hostile --payload-bytes 900000 --json $(BENCH_DIR)/hostile-900k.json $(ARGS)

.PHONY: bench-baseline
bench-baseline: bench-build ## Baseline: idle, fan-out and the 5,000 x 10/s latency point against a bare tokio SSE server, the floor for the ratios
	$(BENCH) idle --server baseline --json $(BENCH_DIR)/baseline-idle.json $(ARGS)
	$(BENCH) fanout --server baseline --json $(BENCH_DIR)/baseline-fanout.json $(ARGS)
	$(BENCH) latency --server baseline --connections 5000 --rate 10 --duration 10s --json $(BENCH_DIR)/baseline-latency-sweep-10.json $(ARGS)

.PHONY: bench-all
bench-all: bench-baseline bench-idle bench-fanout bench-fanout-kafka bench-latency bench-latency-aim bench-latency-sweep bench-keyed bench-reconnect bench-catchup bench-ingest ## Every scenario at full size, then BENCHMARKS.md (about 15 minutes)
	$(MAKE) --no-print-directory bench-report

.PHONY: bench-report
bench-report: ## Write BENCHMARKS.md from target/bench/*.json, the template and docs/perf-pass.md (no benchmark is run)
	$(CARGO) build --release -p sluice-bench
	$(BENCH) report --results $(BENCH_DIR) --template tools/sluice-bench/BENCHMARKS.template.md --perf-pass docs/perf-pass.md --out BENCHMARKS.md

.PHONY: ci
ci: ## What CI runs: .ci/run
	bash .ci/run

.PHONY: clean
clean: ## Remove build output
	$(CARGO) clean
