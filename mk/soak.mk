# `make soak`: the long versions of the hardening suites, run before a release or after a change
# to the workflow, the controller or the harness. `make test` runs short versions of the same.

SOAK_CRASH_RUNS ?= 120

.PHONY: soak
soak: venv tools ## long hardening runs: 120 operator SIGKILLs at random step boundaries
	IDMSYNC_CRASH_RUNS=$(SOAK_CRASH_RUNS) \
		$(PYTEST) tests/integration/test_crash_recovery.py -q $(PYTEST_ARGS)
