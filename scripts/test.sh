#!/usr/bin/env bash
# The test suite, with its own set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
bash scripts/ensure_chromium.sh
export CONTEXT_DISTILL_TEST_PG="${CONTEXT_DISTILL_TEST_PG:-$(bash scripts/ensure_postgres.sh || true)}"
exec .venv/bin/python -m pytest -q "$@"
