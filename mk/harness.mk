# `make harness-check`: the self-tests of the test harness and of the Kubernetes it runs (the
# control plane's cleanup, CEL/RBAC/watches/helm on it, the Argo CD Lua runner). They are marked
# `harness` and left out of `make test`, which tests idmsync (pyproject.toml's addopts).

.PHONY: harness-check
harness-check: venv tools health-tool ## self-tests of the test harness and of Kubernetes itself
	$(PYTEST) tests -m harness -q $(PYTEST_ARGS)
