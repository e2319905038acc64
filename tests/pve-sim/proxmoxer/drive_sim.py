"""Drive pve-sim with proxmoxer, a real third-party PVE client, through a scoped privsep token.

Usage: python drive_sim.py HOST PORT CA_FILE
Exits non-zero on the first mismatch with what real PVE would answer; prints one line per check
and a closing 'N passed, 0 failed' line.
"""
import sys

from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException
from proxmoxer.tools import Tasks

host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
prox = ProxmoxAPI(host, port=port, user="felhom101@pve", token_name="agent",
                  token_value="11111111-2222-3333-4444-555555555101", verify_ssl=ca, timeout=10)
passed = 0


def check(name, cond, detail=""):
    global passed
    if not cond:
        print(f"FAIL {name}: {detail}")
        print(f"{passed} passed, 1 failed")
        sys.exit(1)
    passed += 1
    print(f"ok   {name}")


vms = prox.cluster.resources.get(type="vm")
check("cluster/resources shows only the own guest", [v["vmid"] for v in vms] == [101], vms)
check("resources carry the current node", vms[0]["node"] == "pve1", vms)

upid = prox.nodes("pve1").qemu(101).snapshot.post(snapname="pxtest", description="proxmoxer")
check("snapshot create returns a qmsnapshot UPID", upid.startswith("UPID:pve1:") and ":qmsnapshot:101:" in upid, upid)
st = Tasks.blocking_status(prox, upid, timeout=60, polling_interval=0.2)
check("blocking_status sees the snapshot task stop OK", st["status"] == "stopped" and st["exitstatus"] == "OK", st)
check("task status carries tokenid", st.get("tokenid") == "agent" and st["user"] == "felhom101@pve", st)

snaps = prox.nodes("pve1").qemu(101).snapshot.get()
names = [s["name"] for s in snaps]
check("snapshot list has ours and `current` last", "pxtest" in names and names[-1] == "current", names)

upid = prox.nodes("pve1").qemu(101).snapshot("pxtest").delete()
st = Tasks.blocking_status(prox, upid, timeout=60, polling_interval=0.2)
check("snapshot delete task OK", st["exitstatus"] == "OK", st)
names = [s["name"] for s in prox.nodes("pve1").qemu(101).snapshot.get()]
check("snapshot gone", names == ["current"], names)

upid = prox.nodes("pve1").vzdump.post(vmid=101, storage="pbs-main", mode="snapshot")
st = Tasks.blocking_status(prox, upid, timeout=120, polling_interval=0.5)
check("vzdump waited with proxmoxer's task helper ends OK", st["exitstatus"] == "OK", st)
log = prox.nodes("pve1").tasks(upid).log.get(limit=0)
check("vzdump log ends with TASK OK", log[-1]["t"] == "TASK OK", log[-3:])
backups = prox.nodes("pve1").storage("pbs-main").content.get(vmid=101)
check("the backup is listed on the storage", len(backups) == 1 and backups[0]["volid"].startswith("pbs-main:backup/vm/101/"), backups)

for path in (lambda: prox.nodes("pve1").qemu(102).status.current.get(),
             lambda: prox.nodes("pve2").lxc(103).snapshot.get(),
             lambda: prox.nodes("pve1").qemu(999999).status.current.get()):
    try:
        path()
        check("foreign guest refused", False, "got 2xx")
    except ResourceException as e:
        check(f"foreign guest refused with 403 ({e.status_message.strip()})",
              e.status_code == 403 and "Permission check failed (/vms/" in str(e), str(e))

try:
    prox.nodes("pve1").vzdump.post(vmid=101)
    check("vzdump without storage refused", False, "got 2xx")
except ResourceException as e:
    check("vzdump without storage is checked on `local`", e.status_code == 403 and "/storage/local" in str(e), str(e))

print(f"{passed} passed, 0 failed")
