# GitOps health: the Argo CD health script (manifests/health/) and tools/health, a Go program that
# runs it in gopher-lua as Argo CD does, computes kstatus, and evaluates Flux healthCheckExprs.
# Built once per content hash into $(IDMSYNC_CACHE)/bin (cold: 75 s, mostly k8s.io/api, cel-go).

HEALTH_LUA := manifests/health/idmsync.dev/SyncTokenReset/health.lua
ARGOCD_CM := manifests/health/argocd-cm.yaml

.PHONY: health-tool
health-tool: ## build or reuse tools/health (Argo CD's Lua runtime + kstatus)
	IDMSYNC_CACHE=$(IDMSYNC_CACHE) tools/health/build.sh

TEST_PREREQS += health-tool

.PHONY: argocd-cm
argocd-cm: ## regenerate the argocd-cm snippet from health.lua
	{ sed -n '1,/^  resource.customizations.health.idmsync.dev_SyncTokenReset: |$$/p' $(ARGOCD_CM); \
	  sed 's/^./    &/' $(HEALTH_LUA); } > $(ARGOCD_CM).tmp
	mv $(ARGOCD_CM).tmp $(ARGOCD_CM)
