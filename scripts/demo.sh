#!/usr/bin/env bash
# The demo: a scripted 200+ tool-call agent session through context-distill, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh core
exec .venv/bin/context-distill demo "$@"
