# The Helm chart ships copies of the CRDs; manifests/ is their one source
# (tests/unit/test_crd_matches_models.py fails when the copies drift).

CHART_CRDS := charts/idmsync/crds
CRD_SOURCES := manifests/crd/synctokenresets.idmsync.dev.yaml manifests/peering/kopf-peerings.yaml

.PHONY: chart-crds
chart-crds: ## copy the CRDs from manifests/ into the chart
	cp $(CRD_SOURCES) $(CHART_CRDS)/
