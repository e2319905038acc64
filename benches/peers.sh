#!/usr/bin/env bash
# API economy side by side with peer tools: felhom-agent's follower, a fixed 1 s poller,
# proxmoxer's Tasks.blocking_status and proxcli's `task wait`, one vzdump of 1 min, 10 min and
# 2 h each, against the same pve-sim in one run (method: benches/README.md, "Peers").
#
# Installs what it needs first: a venv at .cache/venv (the one scripts/test uses for proxmoxer)
# gets proxmoxer, requests and proxcli from PyPI — proxcli only here, never for the tests.
# FELHOM_PYTHON overrides the interpreter (it must have all three).
# Options: --short (skip the 2-hour case, which takes a few minutes of wall time per tool).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--short" ]; then export PEERS_DURATIONS=short; fi
if [ -z "${FELHOM_PYTHON:-}" ]; then
  venv=.cache/venv
  if ! "$venv/bin/python" -c 'import proxmoxer, requests, proxmox.cli.main' 2>/dev/null; then
    echo "== installing proxmoxer, requests and proxcli from PyPI into $venv (for this bench only)"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check proxmoxer requests proxcli
  fi
  export FELHOM_PYTHON="$PWD/$venv/bin/python"
fi
"$FELHOM_PYTHON" - <<'PY'
import importlib.metadata as m, platform
print(f"== Python {platform.python_version()}, proxmoxer {m.version('proxmoxer')}, "
      f"proxcli {m.version('proxcli')}, requests {m.version('requests')}, httpx {m.version('httpx')}")
PY
exec cargo bench --bench peers
