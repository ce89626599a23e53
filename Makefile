# Developer entry points; `make help` lists them. The control plane comes from hack/cluster.sh,
# the pinned versions from hack/versions.env.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
CARGO ?= cargo

.PHONY: help deps tools cluster-up cluster-down cluster-env cluster-status fmt lint lint-docker helm-lint \
	test chart-test bench demo demo-rollout crd release plugin

help: ## List the targets
	@awk -F':.*## ' '/^[a-zA-Z0-9_-]+:.*## /{printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## Install what the toolchains lack (Debian packages such as nginx, rustfmt, clippy, pip)
	@hack/install-deps.sh

tools: ## Build (first time) or reuse the pinned etcd, Kubernetes, kwok, helm, Prometheus and Istio binaries
	@hack/build-tools.sh

cluster-up: ## Start a local control plane on 127.0.0.1, or reuse a healthy one
	@hack/cluster.sh up

cluster-down: ## Stop the local control plane and remove its state
	@hack/cluster.sh down

cluster-env: ## Print the exports for the cluster: eval $(make -s cluster-env)
	@hack/cluster.sh env

cluster-status: ## Show whether each control-plane component is running
	@hack/cluster.sh status

fmt: ## Format the Rust code
	$(CARGO) fmt

lint: lint-docker ## rustfmt check, clippy with warnings denied, hadolint
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

lint-docker: ## Lint the Dockerfile with hadolint (installed under ~/.cache/canary-operator on first use)
	@hack/hadolint.sh

helm-lint: ## helm lint --strict the chart (tests/install/ does it too, with other values)
	@PATH="$$(hack/build-tools.sh helm | tail -n 1):$$PATH" helm lint --strict charts/canary-operator

test: deps lint ## Lint, then run all tests against the local cluster (started and stopped here if none runs)
	@hack/test.sh

chart-test: ## Only the Helm chart's tests (tests/install/ and the CRD checks), on the local cluster
	@CARGO_TEST_TARGETS="--test install --test crd" hack/test.sh

bench: ## Benchmark the operator on a cluster of its own (BENCH_N=1000); table + target/bench/report.json
	@hack/bench.sh

demo: ## Run the operator on the local control plane against the lab's example, and shift its weight
	@hack/demo.sh

demo-rollout: ## An automatic rollout 10% -> 50% -> 100% judged by a real Prometheus, then a faulty canary rolled back
	@hack/demo-rollout.sh

crd: ## Regenerate crd/canaryrelease.yaml and the Helm chart's copy from the Rust types
	$(CARGO) run --quiet -- crd > crd/canaryrelease.yaml
	cp crd/canaryrelease.yaml charts/canary-operator/crds/canaryrelease.yaml

release: ## The release binary, built as the Dockerfile builds it (hack/build-release.sh)
	@hack/build-release.sh

PREFIX ?= $(HOME)/.cargo
plugin: ## Build kubectl-canary (release profile) and install it into $(PREFIX)/bin, for `kubectl canary`
	$(CARGO) build --release --locked --bin kubectl-canary
	install -D -m 0755 "$${CARGO_TARGET_DIR:-target}/release/kubectl-canary" "$(PREFIX)/bin/kubectl-canary"
	@echo "installed $(PREFIX)/bin/kubectl-canary; kubectl finds it when that directory is on PATH"
