# `make bench`: what the operator costs over the bare engine, at scale, and how small it runs.
# Real kube-apiserver + etcd, the operator as a subprocess, IDM stubs, and real OpenIDM for
# single-reset latency. Writes bench/results.json and the PNG plots beside it; see
# docs/benchmarks.md. BENCH_ARGS=--no-openidm skips OpenIDM; --smoke is what `make test` runs.

BENCH_ARGS ?=

.PHONY: bench
bench: venv tools idm-dist ## measure the operator (bench/results.json + PNG plots; several minutes)
	@# byte-code as fresh as the sources: a stale .pyc (a hard-linked file whose mtime another
	@# install touched) is compiled again at each start, unwritten under PYTHONDONTWRITEBYTECODE,
	@# which cost the operator 1.3 s of start-up and 60 MB of RSS in one measurement
	$(PY) -m compileall -q -j 0 $(UV_PROJECT_ENVIRONMENT)/lib operator > /dev/null
	$(PY) -m bench.run $(BENCH_ARGS) --out bench/results.json
	$(PY) -m bench.plots bench/results.json bench/

.PHONY: bench-engine
bench-engine: venv ## the bare engine against the stub at several concurrencies (prints a table)
	$(PY) -m bench.bench_engine
