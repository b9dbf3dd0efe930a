#!/usr/bin/env bash
# What the tests need beyond npm, installed when missing: Debian's PostgreSQL (the store tests run
# on it as well as on SQLite) and Chromium (the dashboard's tests drive it), and the engine's
# environment with the tests' Python packages (transformers, PEFT, TRL and the openai SDK as
# referees) in .venv, and llama.cpp's llama-quantize (cmake and g++ build it once per release into
# ~/.cache/tunelab; the export tests' homes copy it). Run by `npm test`; a second run changes
# nothing and takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing Debian's ${missing[*]} for the tests"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "The tests need Debian's ${missing[*]}: run  sudo apt-get install ${missing[*]}  and then npm test again." >&2
    exit 1
  fi
fi

node dist/cli/main.js setup --venv .venv --tests
scratch_home=$(mktemp -d)
node dist/cli/main.js setup --venv .venv --export --home "$scratch_home"
rm -rf "$scratch_home"
