"""Start one vzdump and wait for it with a peer tool's own task wait, on pve-sim's clock.

Usage: wait.py TOOL URL CA_FILE CONTROL_KEY PHASE
  TOOL: proxmoxer  (ProxmoxAPI(...).nodes(n).vzdump.post, then Tasks.blocking_status with its
                    default polling_interval of 1 s)
        proxcli    (`proxcli backup create`, then `proxcli task wait UPID` with its default
                    --poll 500 ms; --timeout raised to 10 h because the default 60 s would give
                    up on any backup longer than a minute)

The simulator's clock is frozen. `time.sleep` is the one thing replaced: it advances the
simulated clock by the slept amount through the control API (`POST /_sim/clock {"advance": s}`)
and returns. The tools' own wait loops, HTTP clients and request sequences run unchanged, so
every request they make is real and counted by the simulator; only their waiting costs no wall
time. After starting the task the driver advances PHASE seconds (where in the second the wait
begins), like the Rust bench does for the other followers. Prints one JSON line: the UPID.
"""
import contextlib
import io
import json
import ssl
import sys
import time
import urllib.request

tool, url, ca, key, phase = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
TOKEN_USER, TOKEN_NAME = "felhom101@pve", "agent"
SECRET = "11111111-2222-3333-4444-555555555101"
ctx = ssl.create_default_context(cafile=ca)


def advance(seconds):
    req = urllib.request.Request(
        f"{url}/_sim/clock", method="POST",
        data=json.dumps({"advance": float(seconds)}).encode(),
        headers={"X-Sim-Control": key, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx) as r:
        r.read()


time.sleep = advance  # the only change to the tools' behaviour


def run_proxmoxer():
    from proxmoxer import ProxmoxAPI
    from proxmoxer.tools import Tasks
    host, port = url.removeprefix("https://").rsplit(":", 1)
    prox = ProxmoxAPI(host, port=int(port), user=TOKEN_USER, token_name=TOKEN_NAME,
                      token_value=SECRET, verify_ssl=ca, timeout=10)
    upid = prox.nodes("pve1").vzdump.post(vmid=101, storage="pbs-main", mode="snapshot")
    advance(phase)
    st = Tasks.blocking_status(prox, upid, timeout=36000)  # default polling_interval=1
    assert st and st["status"] == "stopped" and st["exitstatus"] == "OK", st
    return upid


def proxcli(argv):
    from proxmox.cli.main import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(argv)
        except SystemExit as e:
            if e.code:
                raise RuntimeError(f"proxcli {argv[4:]} exited {e.code}: {out.getvalue()}")
    return json.loads(out.getvalue())


def run_proxcli():
    common = ["--url", url,
              "--api-token", f"{TOKEN_USER}!{TOKEN_NAME}={SECRET}", "--output", "json"]
    created = proxcli(common + ["backup", "create", "--node", "pve1", "--vmid", "101",
                                "--storage", "pbs-main", "--mode", "snapshot"])
    upid = created if isinstance(created, str) else created.get("data", created)
    assert isinstance(upid, str) and upid.startswith("UPID:"), created
    advance(phase)
    waited = proxcli(common + ["task", "wait", upid, "--timeout", "36000000"])
    assert waited.get("result") == "ok", waited
    return upid


upid = {"proxmoxer": run_proxmoxer, "proxcli": run_proxcli}[tool]()
print(json.dumps({"upid": upid}))
