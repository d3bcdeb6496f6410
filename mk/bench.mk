# `make bench`: what the operator costs over the bare engine, at scale, and how small it runs.
# Real kube-apiserver + etcd, the operator as a subprocess, IDM stubs, and real OpenIDM for
# single-reset latency. Writes bench/results.json and the PNG plots beside it; see
# docs/benchmarks.md. BENCH_ARGS=--no-openidm skips OpenIDM; --smoke is what `make test` runs.

BENCH_ARGS ?=

.PHONY: bench
bench: venv tools idm-dist ## measure the operator (bench/results.json + PNG plots; several minutes)
	$(PY) -m bench.run $(BENCH_ARGS) --out bench/results.json
	$(PY) -m bench.plots bench/results.json bench/

.PHONY: bench-engine
bench-engine: venv ## the bare engine against the stub at several concurrencies (prints a table)
	$(PY) -m bench.bench_engine
