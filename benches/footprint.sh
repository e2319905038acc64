#!/usr/bin/env bash
# Footprint of `felhom-agent run` (issue 8 item 1, issue 4 benchmark): stripped release binary
# size, time from exec to READY=1, and an idle daemon's RSS, CPU time and wake-ups over 60 s.
# Prints tables; not a pass/fail test.
#
# Usage: benches/footprint.sh [--runs N] [--idle SECONDS] [--strace]
#   --runs N       exec→READY=1 samples (default 10; the median is reported)
#   --idle S       length of the idle window (default 60; it starts 2 s after READY=1)
#   --strace       also attach `strace -f` to the idle daemon for the window and print every
#                  syscall it made (diagnosis of wake-ups; adds the tracer's own overhead, so the
#                  figures of that run are not the reported ones — it is a separate daemon)
# Environment: CARGO_TARGET_DIR (default ./target); SKIP_BUILD=1 uses the binaries as built.
#
# Method:
# * binary: `cargo build --release` (profile: opt-level "s", fat LTO, panic=abort, strip=symbols);
#   size is the file's length in bytes (what `ls -l` shows).
# * ready: the script owns a NOTIFY_SOCKET (AF_UNIX SOCK_DGRAM) and takes a CLOCK_MONOTONIC
#   timestamp right before spawning the daemon (fork+exec included) and when the datagram with
#   the line READY=1 arrives. pve-sim (separate process, real TLS) is reachable. A fresh state
#   directory per run, two series: an empty state (nothing to repair, PVE not contacted) and a
#   restart while a vzdump runs on PVE (a copy of the state `backup-now --no-wait` left, so the
#   start-up repair looks the pending task up once). The simulator counts the requests.
# * idle: schedule "0 3 1 1 *" (next fire months away), splay 0. Snapshots 2 s after READY=1 and
#   S seconds later: VmRSS/VmHWM/RssAnon/RssFile from /proc/PID/status; utime+stime from
#   /proc/PID/stat (whole process incl. exited threads, clock ticks); per thread from
#   /proc/PID/task/TID/{status,schedstat}: voluntary/involuntary context switches and on-CPU
#   nanoseconds. A wake-up is a voluntary context switch: a thread that blocked and was woken.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -z "${SKIP_BUILD:-}" ]; then
    (cd "$ROOT" && cargo build --release -p felhom-agent -p pve-sim >&2)
fi
exec python3 - "$TARGET/release/felhom-agent" "$TARGET/release/pve-sim" "$ROOT" "$@" <<'PY'
import json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

agent, simbin, root = sys.argv[1:4]
args = sys.argv[4:]
runs, idle, use_strace = 10, 60.0, False
i = 0
while i < len(args):
    if args[i] == "--runs":
        runs = int(args[i + 1]); i += 2
    elif args[i] == "--idle":
        idle = float(args[i + 1]); i += 2
    elif args[i] == "--strace":
        use_strace = True; i += 1
    else:
        sys.exit(f"unknown argument {args[i]!r}")

MiB = 1024 * 1024
TICK = os.sysconf("SC_CLK_TCK")
SECRET = "11111111-2222-3333-4444-555555555101"


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True, cwd=root).stdout.strip()
    load = open("/proc/loadavg").read().split()[:3]
    print("machine")
    print(f"  nproc       {os.cpu_count()}")
    print(f"  cpu         {model}")
    print(f"  memory      {mem}")
    print(f"  kernel      {os.uname().release}")
    print(f"  rustc       {rustc}")
    print(f"  loadavg     {' '.join(load)} (at start; the machine is shared)")
    print()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


tmp = tempfile.mkdtemp(prefix="felhom-footprint-")
procs = []


def cleanup():
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
    shutil.rmtree(tmp, ignore_errors=True)


def start_sim():
    info = os.path.join(tmp, "sim.json")
    p = subprocess.Popen(
        [simbin, "--listen", "127.0.0.1:0", "--scenario",
         os.path.join(root, "tests/pve-sim/scenarios/basic.toml"), "--info-file", info],
        stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "sim.log"), "w"), text=True)
    procs.append(p)
    return json.loads(p.stdout.readline())


def sim_requests(sim):
    """Requests the simulator has logged (its control API; self-signed TLS, not verified)."""
    import ssl, urllib.request
    req = urllib.request.Request(sim["url"].rstrip("/") + "/_sim/requests",
                                 headers={"X-Sim-Control": sim["control_key"]})
    with urllib.request.urlopen(req, context=ssl._create_unverified_context(), timeout=5) as r:
        return len(json.load(r)["data"])


def write_env(sim, n, state_from=None):
    d = os.path.join(tmp, f"run{n}")
    if state_from:
        shutil.copytree(state_from, os.path.join(d, "state"))
    else:
        os.makedirs(os.path.join(d, "state"))
    os.makedirs(os.path.join(d, "sys/class/net/eth0"))
    with open(os.path.join(d, "sys/class/net/eth0/address"), "w") as f:
        f.write("bc:24:11:aa:bb:01\n")
    tok = os.path.join(d, "token")
    with open(tok, "w") as f:
        f.write(SECRET + "\n")
    os.chmod(tok, 0o600)
    cfg = os.path.join(d, "config.toml")
    with open(cfg, "w") as f:
        f.write(f'''[pve]
url = "{sim['url']}"
token-id = "felhom101@pve!agent"
token-secret-file = "{tok}"
fingerprint = "{sim['fingerprint']}"
timeout = "5s"

[backup]
storage = "pbs-main"
mode = "snapshot"
schedule = "0 3 1 1 *"
splay = "0s"

[state]
dir = "{d}/state"

[health]
listen = "127.0.0.1:{free_port()}"
''')
    return d, cfg


def agent_env(d):
    env = {k: v for k, v in os.environ.items()
           if k not in ("FELHOM_AGENT_CONFIG", "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY",
                        "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")}
    env.update(FELHOM_AGENT_SYSFS_ROOT=os.path.join(d, "sys"),
               FELHOM_LOG="info")
    return env


def spawn(d, cfg, sock_path):
    env = agent_env(d)
    env["NOTIFY_SOCKET"] = sock_path
    return subprocess.Popen([agent, "--config", cfg, "run"], env=env,
                            stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(d, "agent.log"), "w"))


def start_daemon(sim, n, state_from=None):
    """Spawns the daemon; returns (proc, dir, ms from spawn to READY=1, ms from spawn's return)."""
    d, cfg = write_env(sim, n, state_from)
    sock_path = os.path.join(d, "notify.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(sock_path)
    rx.settimeout(10)
    t0 = time.monotonic_ns()
    p = spawn(d, cfg, sock_path)
    t_spawned = time.monotonic_ns()
    procs.append(p)
    try:
        while True:
            msg = rx.recv(4096).decode(errors="replace")
            if "READY=1" in msg.splitlines():
                t1 = time.monotonic_ns()
                break
    except socket.timeout:
        sys.exit("no READY=1 within 10 s; daemon log:\n" + open(os.path.join(d, "agent.log")).read())
    rx.close()
    return p, d, (t1 - t0) / 1e6, (t1 - t_spawned) / 1e6


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(10)


def status_fields(path):
    out = {}
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
    except FileNotFoundError:
        pass
    return out


def kb(v):
    return int(v.split()[0])


def snapshot(pid):
    st = status_fields(f"/proc/{pid}/status")
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime/stime are fields 14/15.
    cpu_ticks = int(fields[11]) + int(fields[12])
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        ts = status_fields(f"/proc/{pid}/task/{tid}/status")
        if not ts:
            continue
        try:
            run_ns = int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
        threads[tid] = dict(name=ts["Name"], vol=int(ts["voluntary_ctxt_switches"]),
                            invol=int(ts["nonvoluntary_ctxt_switches"]), run_ns=run_ns)
    return dict(rss=kb(st["VmRSS"]), hwm=kb(st["VmHWM"]), anon=kb(st["RssAnon"]),
                file=kb(st["RssFile"]), cpu_ticks=cpu_ticks, threads=threads, t=time.monotonic())


machine()
sim = None
try:
    # --- binary -------------------------------------------------------------------------------
    size = os.stat(agent).st_size
    kind = subprocess.run(["file", "-b", agent], capture_output=True, text=True).stdout.strip() \
        if shutil.which("file") else "(file(1) not installed)"
    print("binary (release profile, strip = \"symbols\")")
    print(f"  path        {agent}")
    print(f"  file(1)     {kind}")
    print()

    sim = start_sim()

    # --- exec → READY=1 -----------------------------------------------------------------------
    # Two start-ups: a fresh state (nothing to repair, PVE not contacted) and a restart while a
    # backup task runs on PVE (state.json holds its UPID, left by `backup-now --no-wait`): the
    # start-up looks the task up once over TLS before READY=1.
    tpl_dir, tpl_cfg = write_env(sim, "template")
    bn = subprocess.run([agent, "--config", tpl_cfg, "backup-now", "--no-wait"],
                        env=agent_env(tpl_dir), capture_output=True, text=True, timeout=60)
    if bn.returncode != 0:
        sys.exit(f"backup-now --no-wait failed ({bn.returncode}):\n{bn.stderr}")
    series = []
    for label, state_from in (("fresh state", None),
                              ("restart, task pending on PVE", os.path.join(tpl_dir, "state"))):
        samples = []
        before = sim_requests(sim)
        for n in range(runs):
            p, d, ms, _ = start_daemon(sim, f"{len(series)}-{n}", state_from)
            samples.append(ms)
            stop(p)
        api = sim_requests(sim) - before
        series.append((label, samples, api))
    print(f"exec → READY=1, {runs} runs each (ms, from right before spawn; fork+exec included)")
    for label, samples, api in series:
        srt = sorted(samples)
        print(f"  {label}: " + " ".join(f"{x:.1f}" for x in samples))
        print(f"    min {srt[0]:.1f}  median {statistics.median(srt):.1f}  max {srt[-1]:.1f}"
              f"   PVE API requests: {api} in {runs} start-ups")
    ready = sorted(series[0][1])
    ready2 = sorted(series[1][1])
    print()

    # --- idle ---------------------------------------------------------------------------------
    p, d, _, _ = start_daemon(sim, "idle")
    time.sleep(2)
    a = snapshot(p.pid)
    time.sleep(idle)
    b = snapshot(p.pid)
    window = b["t"] - a["t"]
    print(f"idle daemon, window {window:.1f} s starting 2 s after READY=1 (pid {p.pid})")
    print(f"  {'thread':<18}{'tid':>8}{'vol. cs':>10}{'invol. cs':>11}{'on-CPU µs':>12}")
    vol = invol = run_ns = 0
    for tid in sorted(set(a["threads"]) | set(b["threads"]), key=int):
        ta, tb = a["threads"].get(tid), b["threads"].get(tid)
        if ta and tb:
            dv, di, dr = tb["vol"] - ta["vol"], tb["invol"] - ta["invol"], tb["run_ns"] - ta["run_ns"]
            vol, invol, run_ns = vol + dv, invol + di, run_ns + dr
            print(f"  {ta['name']:<18}{tid:>8}{dv:>10}{di:>11}{dr / 1000:>12.0f}")
        elif ta:
            vol += 1  # it ran to exit inside the window: at least one wake-up
            print(f"  {ta['name']:<18}{tid:>8}   exited inside the window")
        else:
            vol += 1
            print(f"  {tb['name']:<18}{tid:>8}   created inside the window")
    cpu_ms = (b["cpu_ticks"] - a["cpu_ticks"]) * 1000 / TICK
    print(f"  threads: {len(a['threads'])} at start, {len(b['threads'])} at end")
    print()

    rss_mib = b["rss"] / 1024
    hwm_mib = b["hwm"] / 1024
    per_min = 60.0 / window
    ready_med = statistics.median(ready)
    ready_med2 = statistics.median(ready2)
    rows = [
        ("binary size (stripped)", f"{size} B = {size / MiB:.2f} MiB", "≤ 8 MiB", size <= 8 * MiB),
        ("exec → READY=1 (median)", f"{ready_med:.1f} ms fresh; {ready_med2:.1f} ms with a pending task",
         "≤ 100 ms", max(ready_med, ready_med2) <= 100),
        ("idle RSS (VmRSS, end)", f"{rss_mib:.2f} MiB (anon {b['anon'] / 1024:.2f}, file {b['file'] / 1024:.2f})",
         "≤ 8 MiB", rss_mib <= 8),
        ("peak RSS (VmHWM)", f"{hwm_mib:.2f} MiB", "-", None),
        ("RSS change over window", f"{b['rss'] - a['rss']:+d} KiB", "-", None),
        ("idle CPU per minute", f"{cpu_ms * per_min:.0f} ms (utime+stime, {1000 // TICK} ms ticks); "
         f"{run_ns * per_min / 1e6:.3f} ms (schedstat)", "≤ 10 ms", run_ns * per_min / 1e6 <= 10),
        ("idle wake-ups per minute", f"{vol * per_min:.1f} voluntary cs ({invol * per_min:.1f} involuntary)",
         "0", vol == 0),
    ]
    print("summary")
    print(f"  {'figure':<26}{'measured':<62}{'target':<10}ok")
    for name, val, tgt, ok in rows:
        mark = "-" if ok is None else ("yes" if ok else "NO")
        print(f"  {name:<26}{val:<62}{tgt:<10}{mark}")
    print()

    if use_strace:
        if not shutil.which("strace"):
            print("strace is not installed")
        else:
            out = os.path.join(tmp, "strace.txt")
            tr = subprocess.Popen(["strace", "-f", "-tt", "-o", out, "-p", str(p.pid)],
                                  stderr=subprocess.DEVNULL)
            time.sleep(idle)
            tr.send_signal(signal.SIGINT)
            tr.wait(10)
            lines = open(out).read().splitlines()
            print(f"strace -f over {idle:.0f} s of the same idle daemon: {len(lines)} lines")
            for line in lines[:60]:
                print("  " + line)
            print()
    stop(p)
finally:
    cleanup()
PY
