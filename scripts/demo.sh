#!/usr/bin/env bash
# The demo: a scripted 200+ tool-call agent session through context-distill, offline.
# Its archive is kept in ./demo.db: look inside with .venv/bin/context-distill inspect demo.db
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh core
exec .venv/bin/context-distill demo --db demo.db "$@"
