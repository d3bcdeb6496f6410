# `make demo`: local control plane + IDM + operator + one SyncTokenReset, status before/after.

DEMO_IDM ?= real

.PHONY: demo
demo: venv tools idm-dist ## the main job end to end (DEMO_IDM=real|stub), then tear down
	$(PY) -m tests.harness.demo --idm $(DEMO_IDM)
