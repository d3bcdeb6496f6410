# Real IDM peers for the e2e tests: OpenDJ (LDAP + external changelog) and OpenIDM,
# resolved from Maven Central with mvn and cached by version under $(IDMSYNC_CACHE).
# The harness itself is tests/harness/openidm.py; its config lives in tests/e2e/idm/.

.PHONY: idm-dist
idm-dist: venv ## resolve + cache OpenDJ and OpenIDM distributions (idempotent)
	$(PY) -m tests.harness.openidm resolve

.PHONY: idm
idm: idm-dist ## run OpenDJ + OpenIDM in the foreground (prints IDM_URL=..., Ctrl-C stops)
	$(PY) -m tests.harness.openidm run

.PHONY: opendj
opendj: idm-dist ## run only OpenDJ (changelog on) in the foreground
	$(PY) -m tests.harness.openidm run --opendj-only

TEST_PREREQS += idm-dist
