#!/usr/bin/env bash
# Debian's headless Chromium for the inspector's browser test. Idempotent: a second
# run finds it and returns at once. Needs root (CI runs as root) or sudo; where it
# cannot install, it says so and the browser test skips with that reason.
set -uo pipefail
for name in chromium chromium-browser; do
  if command -v "$name" >/dev/null 2>&1; then
    exit 0
  fi
done
if [ "$(id -u)" = "0" ]; then
  sudo_cmd=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo_cmd="sudo -n"
else
  echo "ensure_chromium: chromium is missing and this user cannot install it (the browser test will skip)" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure_chromium: no apt-get here; install chromium yourself (the browser test will skip)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
echo "ensure_chromium: installing Debian's chromium (once)" >&2
if ! $sudo_cmd apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1; then
  $sudo_cmd apt-get update -q >/dev/null 2>&1 || true
  $sudo_cmd apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1 \
    || echo "ensure_chromium: apt-get install chromium failed (the browser test will skip)" >&2
fi
exit 0
