#!/usr/bin/env bash
# Installs the Python reference clients (google-cloud-storage for the signed-URL differential
# test) into a venv outside the work tree, so it survives `git clean` and is shared by checkouts.
# Idempotent: it does nothing when the venv already matches requirements.txt.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${SCALABLE_CACHE:-$HOME/.cache/scalableapp}"
venv="$cache/venv"
req="$here/requirements.txt"
stamp="$venv/.requirements.sha256"

python="${PYTHON:-python3}"
want="$(sha256sum "$req" | cut -d' ' -f1)"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "python venv up to date: $venv" >&2
    exit 0
fi

mkdir -p "$cache"
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
# Fail here, not in the test, when the reference client cannot be imported.
"$venv/bin/python" -c 'import google.cloud.storage, google.oauth2.service_account'
echo "$want" > "$stamp"
echo "python venv ready: $venv" >&2
