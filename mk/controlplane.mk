# Real Kubernetes control plane (etcd + kube-apiserver on loopback, no kubelet) for tests and demos.
# Binaries are built from source by tools/build.sh, once per version, into $(IDMSYNC_CACHE)/bin.

IDMSYNC_VERSIONS_FILE := $(CURDIR)/tools/versions.env
idmsync_pinned = $(shell sed -n 's/^$(1)=//p' $(IDMSYNC_VERSIONS_FILE))
IDMSYNC_KUBE_VERSION := $(call idmsync_pinned,KUBE_VERSION)
IDMSYNC_ETCD_VERSION := $(call idmsync_pinned,ETCD_VERSION)
IDMSYNC_HELM_VERSION := $(call idmsync_pinned,HELM_VERSION)

# What the harness (tests/harness/controlplane.py) and the tests run; override to use other builds.
export IDMSYNC_KUBE_APISERVER ?= $(IDMSYNC_CACHE)/bin/kube-$(IDMSYNC_KUBE_VERSION)/kube-apiserver
export IDMSYNC_ETCD ?= $(IDMSYNC_CACHE)/bin/etcd-$(IDMSYNC_ETCD_VERSION)/etcd
export IDMSYNC_HELM ?= $(IDMSYNC_CACHE)/bin/helm-$(IDMSYNC_HELM_VERSION)/helm

.PHONY: tools
tools: ## build or reuse kube-apiserver, etcd, helm (cold: 10-25 min, cached by version)
	IDMSYNC_CACHE=$(IDMSYNC_CACHE) tools/build.sh

TEST_PREREQS += tools

.PHONY: controlplane
controlplane: venv tools ## run etcd + kube-apiserver on loopback until Ctrl-C (prints KUBECONFIG=...)
	$(PY) -m tests.harness.controlplane
