#!/usr/bin/env bash
# Runs the ClickHouse SQL compatibility tests on chDB (a current ClickHouse engine,
# in process). Needs python3 (with venv) and network access to PyPI on first run.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$repo/.cache/chdb-venv"

if [ ! -x "$venv/bin/python" ]; then
    mkdir -p "$repo/.cache"
    if ! python3 -m venv "$venv"; then
        rm -rf "$venv"
        echo "run.sh: python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
        exit 2
    fi
fi

"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"

export PYTHONDONTWRITEBYTECODE=1
set +e
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$here" "$@"
code=$?
set -e
exit "$code"
