# Developer entry points; `make help` lists them. The control plane comes from hack/cluster.sh,
# the pinned versions from hack/versions.env.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
CARGO ?= cargo

.PHONY: help tools cluster-up cluster-down cluster-env cluster-status fmt lint test demo crd

help: ## List the targets
	@awk -F':.*## ' '/^[a-zA-Z0-9_-]+:.*## /{printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

tools: ## Build (first time) or reuse the pinned etcd, Kubernetes, kwok and helm binaries
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

lint: ## rustfmt check and clippy with warnings denied
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

test: lint ## Lint, then run all tests against the local cluster (started and stopped here if none runs)
	@hack/test.sh

demo: ## Run the operator on the local control plane against the lab's example, and shift its weight
	@hack/demo.sh

crd: ## Regenerate crd/canaryrelease.yaml from the Rust types
	$(CARGO) run --quiet -- crd > crd/canaryrelease.yaml
