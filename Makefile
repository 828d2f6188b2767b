# turnpike: the two commands a newcomer needs are `make run` and `make test`.
# Tools are built from the Go module proxy into bin/ on first use.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

BIN        := $(CURDIR)/bin
CONTROLLER_GEN_VERSION := v0.23.0
CONTROLLER_GEN := $(BIN)/controller-gen-$(CONTROLLER_GEN_VERSION)
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
IMG        ?= turnpike:$(VERSION)

.PHONY: all
all: build

##@ Development

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code from the API types.
	$(CONTROLLER_GEN) object paths=./api/...

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs and RBAC from markers into config/.
	$(CONTROLLER_GEN) crd rbac:roleName=turnpike-operator paths=./api/... paths=./controllers/... \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac

.PHONY: verify-generated
verify-generated: generate manifests ## Fail if generated files differ from what is committed.
	@git diff --exit-code -- api config || { echo "generated files are stale: run 'make generate manifests' and commit" >&2; exit 1; }

.PHONY: control-plane
control-plane: ## Build kube-apiserver, etcd and kubectl for envtest into bin/k8s/.
	@hack/build-control-plane.sh >/dev/null

.PHONY: test
test: control-plane ## Run unit tests, the relay suite and the envtest suite on a real API server.
	KUBEBUILDER_ASSETS="$$(hack/build-control-plane.sh)" go test -count=1 ./...

.PHONY: bench
bench: ## Benchmark the relay against coturn on loopback.
	hack/bench.sh

.PHONY: build
build: ## Build the turnpike binary.
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN)/turnpike .

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*##/ { printf "  %-18s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

$(CONTROLLER_GEN):
	@mkdir -p $(BIN)
	GOBIN=$(BIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)
	mv $(BIN)/controller-gen $(CONTROLLER_GEN)
