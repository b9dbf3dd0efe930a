#!/usr/bin/env bash
# The README's first command on a fresh checkout, as a new user runs it: this repository's committed
# HEAD cloned into an empty folder, an empty HOME and TUNELAB_HOME (no npm cache, no engine
# environment, no models), then `npm install && npm run demo` to the end. Fails unless the demo
# finished and the fine-tune answered the guide's question.
set -euo pipefail
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/tunelab"
mkdir "$work/home"
# The user's npm settings are the machine's, not a cache (on a closed network they say where
# Node's headers are for native modules); nothing else of the old HOME comes along.
[ -f "$HOME/.npmrc" ] && cp "$HOME/.npmrc" "$work/home/.npmrc"
cd "$work/tunelab"
# The machine's own settings (a package index or mirror pip is told of) stay; what names an
# engine, a server or a key of ours does not.
env -u TUNELAB_PYTHON -u TUNELAB_HOME -u OPENAI_API_KEY -u OPENAI_BASE_URL HOME="$work/home" \
  bash -c 'npm install --no-audit --no-fund && npm run demo' 2>&1 | tee "$work/demo.log"
grep -q "^Done. The home folder is" "$work/demo.log"
grep -q "Engine environment ready" "$work/demo.log"
grep -qE '^\s+fine-tune: ".+"' "$work/demo.log"
echo "fresh clone: the first command ran to the end"
