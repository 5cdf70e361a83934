# The README's commands. Each target installs what it needs first (uv, then the locked environment).
UV_VERSION := 0.13.9
UV := $(or $(shell command -v uv 2>/dev/null),.tools/bin/uv)
PY := .venv/bin/python

.PHONY: run test test-fast dev serve bench bench-quick lint typecheck clean services-down prerequisites

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

# The one system prerequisite (README, "Run it"): the benchmarks' throughput figures, and so the test that
# runs `--quick`, drive load with wrk. Checked before anything runs, so a missing one is named at once.
prerequisites:
	@command -v wrk >/dev/null || { echo "missing prerequisite: wrk (Debian/Ubuntu: sudo apt-get install wrk; macOS: brew install wrk)" >&2; exit 1; }

# Bytecode compiled once at install, as the Dockerfile does: every Dagster run and step is a fresh
# interpreter, which would otherwise compile Dagster, pandas and the rest from source wherever
# PYTHONDONTWRITEBYTECODE is set or the environment is read-only.
.venv/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --compile-bytecode --python python3
	touch $@

## The whole asset graph, then a prediction from Redis for a known message.
run: .venv/.synced
	.venv/bin/sms-assets run

## Lint and type-check, then every test tier: unit, definitions, integration (real Postgres + Redis), end-to-end.
test: prerequisites .venv/.synced
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/pyright
	.venv/bin/lint-imports
	.venv/bin/pytest

## No Postgres, Redis or wrk: lint, the import layers and the unit tests (about two minutes). A unit test
## that asks for the servers fails, naming where it belongs.
test-fast: .venv/.synced
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports
	SMS_TESTS_WITHOUT_SERVICES=1 .venv/bin/pytest -m "not integration and not e2e" tests/unit

## The prediction API on http://127.0.0.1:8000 (after `make run`): POST /predict, GET /ready.
serve: .venv/.synced
	.venv/bin/sms-assets serve

## The benchmark suite (after `make run`; needs `wrk`): online latency and throughput beside feast serve
## and raw Redis, then the whole graph at 10k, 100k and 1M messages; writes benchmarks/results/suite-*.json,
## its Markdown page (.md) and the folder's index (README.md).
bench: prerequisites .venv/.synced
	.venv/bin/python -m benchmarks

## The same in under a minute: small samples, one small N (what the tests run).
bench-quick: prerequisites .venv/.synced
	.venv/bin/python -m benchmarks --quick

## The Dagster UI (and daemon) on http://localhost:3000.
dev: .venv/.synced
	.venv/bin/sms-assets dev

lint: .venv/.synced
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports

typecheck: .venv/.synced
	.venv/bin/pyright

services-down: .venv/.synced
	.venv/bin/sms-assets services down

clean: services-down
	rm -rf .venv .tools .sms_state
