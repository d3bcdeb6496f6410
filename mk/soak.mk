# `make soak`: the long versions of the hardening suites, run before a release or after a change
# to the workflow, the controller or the harness. `make test` runs short versions of the same.

SOAK_CRASH_RUNS ?= 120
SOAK_HA_RESETS ?= 200
SOAK_HYPOTHESIS_EXAMPLES ?= 500

.PHONY: soak
soak: venv tools ## long hardening runs: 120 operator SIGKILLs, HA with 200 resets, 500 generated specs
	IDMSYNC_CRASH_RUNS=$(SOAK_CRASH_RUNS) IDMSYNC_HA_RESETS=$(SOAK_HA_RESETS) \
	IDMSYNC_HYPOTHESIS_EXAMPLES=$(SOAK_HYPOTHESIS_EXAMPLES) \
		$(PYTEST) tests/integration/test_crash_recovery.py tests/integration/test_ha.py \
		tests/integration/test_hostile_specs.py -q $(PYTEST_ARGS)
