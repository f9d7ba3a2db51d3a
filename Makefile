# Vigil — the two commands a new machine needs are `make run` and `make test`.
SHELL := /bin/bash

.PHONY: bench run run-loop test e2e stack-up stack-down stack-status deps fmt lint clean help chaos soak

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

run: ## Install what is missing, start the local stack and the four services, stream simulated traffic.
	scripts/run.sh

test: ## Install what is missing, start the test stack on its own ports, run every test.
	scripts/test.sh

e2e: ## Only the end-to-end suite (whole pipeline, real everything).
	scripts/test.sh -p vigil-e2e

run-loop: ## Start `make run`, wait for traffic, Ctrl-C it (SIGINT to its process group), again: RUNS=30 times.
	scripts/run-loop.sh $(or $(RUNS),30)

stack-up: ## Start PostgreSQL and the nisshi broker for `make run` (VIGIL_PROFILE=test for the test stack).
	scripts/install-deps.sh && scripts/stack.sh up

stack-down: ## Stop everything either profile started: a running `make run` and its services, both stacks.
	VIGIL_PROFILE=run scripts/stack.sh down
	VIGIL_PROFILE=test scripts/stack.sh down

stack-status: ## Show whether they are up (both profiles).
	@VIGIL_PROFILE=run scripts/stack.sh status | sed 's/^/run:  /'
	@VIGIL_PROFILE=test scripts/stack.sh status | sed 's/^/test: /'

.PHONY: deploy-up deploy-down
deploy-up: ## The whole stack in Docker: docker compose -f deploy/docker-compose.yml up -d --build (needs Docker).
	scripts/deploy.sh up $(ARGS)

deploy-down: ## Stop the Docker stack (docker compose ... down; ARGS=-v also removes its volumes).
	scripts/deploy.sh down $(ARGS)

clean: stack-down ## Stop everything, then remove the project's state (.vigil/, its PostgreSQL clusters); not target/ or the nisshi build cache.
	scripts/clean.sh

deps: ## Only install what is missing.
	scripts/install-deps.sh --with-python --with-prometheus --with-nextest

fmt: ## Format the code.
	cargo fmt --all

lint: ## Clippy with warnings as errors.
	cargo clippy --workspace --all-targets -- -D warnings

bench: ## Benchmarks (release build) against the test stack; figures in bench/results/.
	scripts/bench.sh $(ARGS)

.PHONY: evaluate
evaluate: ## Detection quality: the rate rules side by side and the volume rules, on the incident catalogue (release; ARGS="--quick", "--only volume", "--json", "--seeds 10").
	cargo run --release --locked -p vigil-evaluation --bin vigil-evaluate -- $(ARGS)

.PHONY: fuzz
fuzz: ## Fuzzing, long form: schemathesis on both APIs (thousands of cases), cargo-fuzz on the decoders (60 s each).
	scripts/fuzz.sh

chaos: ## Reliability, long form: every fault twice with exact books, poison, secrets, limits; then fuzzing (report: .vigil/chaos/report.txt).
	scripts/chaos.sh

soak: ## Steady traffic through the whole stack; fails if memory or descriptors grow (SOAK_DURATION=10m SOAK_RATE=100).
	scripts/soak.sh
