#!/usr/bin/env bash
# Build goloop into its own virtual environment (.venvs/demo) and run its demo.
# Uses the newest supported CPython it finds (3.13, 3.12, then 3.11).
set -eu
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
py=""
for ver in 3.13 3.12 3.11; do
    if command -v pyenv >/dev/null 2>&1; then
        v="$(pyenv versions --bare 2>/dev/null | grep -E "^${ver//./\\.}\.[0-9]+$" | sort -t. -k3 -n -r | head -1)"
        if [ -n "$v" ] && [ -x "$(pyenv prefix "$v")/bin/python$ver" ]; then
            py="$(pyenv prefix "$v")/bin/python$ver"; break
        fi
    fi
    if command -v "python$ver" >/dev/null 2>&1 && "python$ver" -c pass 2>/dev/null; then
        py="$(command -v "python$ver")"; break
    fi
done
if [ -z "$py" ]; then
    echo "goloop needs CPython 3.11, 3.12 or 3.13; none was found" >&2
    exit 1
fi
venv="$ROOT/.venvs/demo"
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check ".[bench]"
cd "$venv"   # run the installed package, not the source tree
exec "$venv/bin/python" -m goloop.demo
