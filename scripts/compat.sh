#!/usr/bin/env bash
# Runs tests/compat (pytest + real openstacksdk) against target/release/switchyard.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SWITCHYARD_VENV:-.venv}
REQ=tests/compat/requirements.txt
STAMP="$VENV/.compat-requirements"
# (Re)install when the venv is missing, broken, or requirements.txt changed.
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import openstack, pytest' 2>/dev/null \
   || ! cmp -s "$REQ" "$STAMP"; then
  echo "-- installing $REQ into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
  cp "$REQ" "$STAMP"
fi
# A real Keystone (tests/compat/test_keystone.py) in a venv of its own.
KVENV=${SWITCHYARD_KEYSTONE_VENV:-.venv-keystone}
KREQ=tests/compat/keystone/requirements.txt
KSTAMP="$KVENV/.keystone-requirements"
if [ ! -x "$KVENV/bin/keystone-manage" ] || ! cmp -s "$KREQ" "$KSTAMP"; then
  echo "-- installing $KREQ into $KVENV"
  [ -x "$KVENV/bin/python" ] || python3 -m venv "$KVENV"
  "$KVENV/bin/pip" install --quiet --disable-pip-version-check -r "$KREQ"
  cp "$KREQ" "$KSTAMP"
fi
SWITCHYARD_KEYSTONE_VENV=$(cd "$KVENV" && pwd) \
SWITCHYARD_BIN=${SWITCHYARD_BIN:-$PWD/target/release/switchyard} \
  "$VENV/bin/python" -m pytest -q tests/compat
