# `make demo`: local control plane + IDM + operator + one SyncTokenReset, status before/after.

DEMO_IDM ?= auto

.PHONY: demo
demo: venv tools ## the main job end to end (DEMO_IDM=auto|real|stub), then tear down
	$(PY) -m tests.harness.demo --idm $(DEMO_IDM)
