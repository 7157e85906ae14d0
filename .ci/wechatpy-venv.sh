#!/usr/bin/env bash
# A venv under target/ with the pinned wechatpy the drop-in test drives (tests/wechatpy.rs),
# with its crypto backend, every package pinned in wechatpy-requirements.txt (pip freeze).
# Idempotent: does nothing when the venv already holds that version. Prints the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

WECHATPY_VERSION=1.8.18
venv=target/wechatpy-venv
if ! "$venv/bin/python" -c "import wechatpy, cryptography, sys; sys.exit(wechatpy.__version__ != '$WECHATPY_VERSION')" 2>/dev/null; then
  python3 -m venv "$venv" 2>/dev/null || { apt-get install -y python3-venv >/dev/null && python3 -m venv "$venv"; }
  "$venv/bin/pip" install -q -r .ci/wechatpy-requirements.txt >&2
fi
echo "$PWD/$venv/bin/python"
