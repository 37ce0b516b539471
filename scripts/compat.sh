#!/usr/bin/env bash
# Runs tests/compat (pytest + real openstacksdk) against target/release/switchyard.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SWITCHYARD_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import openstack, pytest' 2>/dev/null; then
  echo "-- creating $VENV with openstacksdk and pytest"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/compat/requirements.txt
fi
SWITCHYARD_BIN=${SWITCHYARD_BIN:-$PWD/target/release/switchyard} \
  "$VENV/bin/python" -m pytest -q tests/compat
