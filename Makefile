# turnpike: the two commands a newcomer needs are `make run` and `make test`.
# Tools are built from the Go module proxy into bin/ on first use.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

BIN        := $(CURDIR)/bin
CONTROLLER_GEN_VERSION := v0.23.0
CONTROLLER_GEN := $(BIN)/controller-gen-$(CONTROLLER_GEN_VERSION)
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
IMG        ?= turnpike:$(VERSION)
REVISION   ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# The source's time, not the build's: file times and image dates, so two
# builds of one commit give the same image digest.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
PLATFORMS  ?= linux/amd64,linux/arm64
IMAGE_DIR  := $(BIN)/image

.PHONY: all
all: build

##@ Development

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code from the API types.
	$(CONTROLLER_GEN) object paths=./api/...

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs and RBAC from markers into config/, and copy them into the Helm chart.
	$(CONTROLLER_GEN) crd rbac:roleName=operator paths=./api/... paths=./controllers/... \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	hack/helm-crds.sh

.PHONY: verify-generated
verify-generated: generate manifests ## Fail if generated files differ from what is committed.
	@git diff --exit-code -- api config charts || { echo "generated files are stale: run 'make generate manifests' and commit" >&2; exit 1; }

.PHONY: generate-bpf
generate-bpf: ## Regenerate the relay fast path's BPF objects (needs clang and libbpf-dev; the output is committed).
	go generate ./relay/fastpath/

.PHONY: control-plane
control-plane: ## Build kube-apiserver, etcd and kubectl for envtest into bin/k8s/.
	@hack/build-control-plane.sh >/dev/null

.PHONY: test
test: control-plane ## Run unit tests, the relay suite and the envtest suite on a real API server.
	KUBEBUILDER_ASSETS="$$(hack/build-control-plane.sh)" go test -count=1 ./...

.PHONY: fuzz
fuzz: ## Run every Go fuzz target for FUZZTIME each (default 5s), one at a time.
	hack/fuzz.sh

.PHONY: soak
soak: ## As root: ALLOCS (10000) allocations with traffic for DURATION (10m) at RATE (20000) packets/s through the built relay while a flood runs; see docs/relay.md.
	go test -tags soak -count=1 -timeout 0 -v -run '^TestSoak$$' ./test/adversarial/

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

##@ Install

HELM_VERSION := v3.22.0
HELM    := $(BIN)/helm-$(HELM_VERSION)
KUBECTL ?= $(CURDIR)/hack/kubectl.sh
CHART   := charts/turnpike

.PHONY: run
run: ## Run the operator on the cluster of your kubeconfig, or, if none answers, on a local playground control plane with a relay.
	hack/run.sh

.PHONY: image
image: ## Build the image (operator and relay in one) for $(PLATFORMS) with no Docker engine: OCI layout in bin/image/oci, SPDX SBOMs in bin/image/sbom.
	go run ./hack/image build -out $(IMAGE_DIR) -version $(VERSION) -revision $(REVISION) -created $(SOURCE_DATE_EPOCH) -platforms $(PLATFORMS)

# image-push wants the registry named: the default IMG has none.
ifneq ($(filter image-push,$(MAKECMDGOALS)),)
ifeq ($(origin IMG),file)
$(error make image-push: name the image, e.g. make image-push IMG=registry.example.com/turnpike:v0.1.0)
endif
endif

.PHONY: image-push
image-push: image ## Push the image index to IMG=registry/repository:tag (credentials from ~/.docker/config.json, as docker login writes them).
	go run ./hack/image push -layout $(IMAGE_DIR)/oci $(IMG)

DOCKER_PLATFORM ?= linux/$(shell go env GOARCH)

.PHONY: docker-build
docker-build: ## Build the image $(IMG) for DOCKER_PLATFORM (default: this machine's) with a Docker engine; `make image` needs none.
	docker build --platform $(DOCKER_PLATFORM) --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) -t $(IMG) .

.PHONY: install
install: ## Install the CRDs into the cluster of your kubeconfig.
	$(KUBECTL) apply -k config/crd

.PHONY: uninstall
uninstall: ## Delete the CRDs, and with them every TurnServer and TurnCredential.
	$(KUBECTL) delete --ignore-not-found -k config/crd

.PHONY: deploy
deploy: ## Install the operator (config/default, namespace turnpike-system) with image $(IMG).
	hack/deploy.sh $(IMG)

.PHONY: undeploy
undeploy: ## Delete what deploy installed, CRDs included.
	$(KUBECTL) delete --ignore-not-found -k config/default

.PHONY: helm-crds
helm-crds: ## Copy the generated CRDs and ClusterRole rules into the Helm chart (`make manifests` does it too).
	hack/helm-crds.sh

.PHONY: helm-lint
helm-lint: $(HELM) ## Lint the Helm chart with its default values and with everything enabled.
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) --set monitoring.serviceMonitor.enabled=true,monitoring.podMonitor.enabled=true,monitoring.prometheusRule.enabled=true,monitoring.grafanaDashboard.enabled=true

.PHONY: helm
helm: $(HELM) ## Build helm into bin/ (tests find it there).

$(HELM):
	@mkdir -p $(BIN)
	GOBIN=$(BIN) go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	mv $(BIN)/helm $(HELM)

# `make test` needs helm (test/install runs it as a binary): build it first.
test: $(HELM)

##@ Benchmarks

NODES  ?= 1000
STEADY ?= 5m

.PHONY: scale
scale: ## Operator scale benchmark on a real control plane (NODES=1000 STEADY=5m; OPERATOR=binary OPERATOR_TREE=its source tree); see docs/performance.md. Not part of make test.
	WITH_CONTROLLER_MANAGER=1 hack/build-control-plane.sh >/dev/null
	go run ./hack/scale -nodes $(NODES) -steady $(STEADY) \
		$(if $(OPERATOR),-operator $(OPERATOR)) $(if $(OPERATOR_TREE),-tree $(OPERATOR_TREE)) $(SCALE_FLAGS)

##@ End-to-end

.PHONY: e2e
e2e: $(HELM) ## End-to-end lab (needs root): network namespaces, kube-apiserver+etcd+kube-controller-manager, the chart, relays run by a node agent; see docs/e2e.md.
	WITH_CONTROLLER_MANAGER=1 hack/build-control-plane.sh >/dev/null
	go test -tags e2e -count=1 -timeout 20m -v ./test/e2e/
