#!/usr/bin/env python3
"""Scale benchmark: N tenants, each a separate client process, issuing small launches with a
synchronisation every K launches, through one daemon.

For each arm, binaries and policy, at N = 1, 2, 4, ... tenants, it reports aggregate commands
per second, per-command latency p50/p99 and the daemon's CPU time per command (utime + stime
from /proc/PID/stat), each also as a ratio against N = 1 of the same series in the same run;
and the daemon's CPU use while IDLE clients are connected and do nothing.

Arms:
  sim     batond --executor sim (no GPU; what the CPU machine runs)
  baton   batond --executor cuda (the real driver)
  native  no daemon: each client talks to the NVIDIA driver
  mps     NVIDIA MPS (private pipe and log directories); the daemon's CPU is the MPS server's

Measurements of one series point are taken in turns with the others (every arm, binaries and
policy at one N, then the next N; the whole sweep REPEATS times), so that load on a shared
machine hits every series alike; with REPEATS > 1 each figure is the median over the repeats.

  python3 bench/scale/run.py --arms sim --bins new=target/release --out bench/results

See bench/README.md ("Scale benchmark").
"""

import argparse
import datetime
import json
import math
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")

SIM_IMAGE = "//baton-sim\nkernel empty\n"
# An empty kernel for the real driver (JIT-compiled from PTX by every arm alike).
PTX_IMAGE = """.version 8.0
.target sm_70
.address_size 64
.visible .entry empty()
{
    ret;
}
"""


def cpu_seconds(pids):
    """utime + stime of the processes (whole thread groups, exited threads included)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # Fields 14 and 15 of stat(5), counted from 1; after the ")" the list starts at field 3.
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def pids_named(names):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/comm") as f:
                if f.read().strip() in names:
                    out.append(int(d))
        except OSError:
            pass
    return out


def percentile(sorted_values, p):
    """Nearest-rank p-quantile (0 < p <= 1) of an already sorted list."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), math.ceil(p * len(sorted_values))))
    return sorted_values[rank - 1]


def shim_in(bins):
    """The shim in a binaries folder: installed as libcuda.so.1, or as cargo leaves it."""
    for name in ("libcuda.so.1", "libcuda.so"):
        if (Path(bins) / name).exists():
            return Path(bins) / name
    raise RuntimeError(f"no libcuda.so.1 or libcuda.so in {bins}")


def default_bins():
    carry = ROOT / ".carry" / "bin"
    return carry if (carry / "batond").exists() else ROOT / "target" / "release"


class Arm:
    """How to serve clients: start() before the clients, env for them, daemon pids, stop()."""

    def __init__(self, kind, bins, policy, work):
        self.kind, self.bins, self.policy, self.work = kind, bins, policy, work
        self.proc = None
        self.env = {}
        self.log = None

    def image(self):
        path = self.work / ("image.sim" if self.kind == "sim" else "image.ptx")
        path.write_text(SIM_IMAGE if self.kind == "sim" else PTX_IMAGE)
        return path

    def start(self):
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        if self.kind in ("sim", "baton"):
            sock = self.work / "baton.sock"
            if sock.exists():
                sock.unlink()
            cfg = self.work / "baton.toml"
            cfg.write_text(
                f'[daemon]\npolicy = "{self.policy}"\nmetrics_listen = "off"\n'
            )
            self.log = open(self.work / "batond.log", "ab")
            executor = "sim" if self.kind == "sim" else "cuda"
            self.proc = subprocess.Popen(
                [str(Path(self.bins) / "batond"), "--executor", executor,
                 "--socket", str(sock), "--config", str(cfg)],
                stdout=subprocess.DEVNULL, stderr=self.log, env=env)
            deadline = time.monotonic() + 30
            while True:
                try:
                    with socket.socket(socket.AF_UNIX) as s:
                        s.connect(str(sock))
                    break
                except OSError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"batond did not start (log: {self.work}/batond.log)")
                    time.sleep(0.02)
            env["LD_PRELOAD"] = str(shim_in(self.bins))
            env["BATON_SOCKET"] = str(sock)
            env.pop("BATON_TENANT", None)
        elif self.kind == "mps":
            pipe, logs = self.work / "mps-pipe", self.work / "mps-log"
            pipe.mkdir(exist_ok=True)
            logs.mkdir(exist_ok=True)
            env["CUDA_MPS_PIPE_DIRECTORY"] = str(pipe)
            env["CUDA_MPS_LOG_DIRECTORY"] = str(logs)
            subprocess.run(["nvidia-cuda-mps-control", "-d"], env=env, check=True)
        self.env = env

    def daemon_pids(self):
        if self.kind in ("sim", "baton"):
            return [self.proc.pid]
        if self.kind == "mps":
            return pids_named({"nvidia-cuda-mps", "nvidia-cuda-mps-server"})
        return []

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self.kind == "mps":
            subprocess.run(["nvidia-cuda-mps-control"], input=b"quit\n", env=self.env)
        if self.log:
            self.log.close()
            self.log = None


def kill_leftovers(procs):
    """After a failure: the clients still running (each one this run started)."""
    for p, _ in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def start_clients(arm, client, image, kernel, n, k, seconds, procs):
    """Starts n clients (appended to procs as they start) and waits until each is ready."""
    for i in range(n):
        out = arm.work / f"lat-{i}.bin"
        p = subprocess.Popen(
            [str(client), str(image), kernel, str(k), str(seconds), str(out)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=arm.env)
        procs.append((p, out))
    for p, _ in procs:
        line = p.stdout.readline().decode().strip()
        if line != "ready":
            raise RuntimeError(f"a client did not start (said {line!r}); see {arm.work}")


def end_clients(procs):
    for p, _ in procs:
        try:
            p.stdin.close()
        except OSError:
            pass
    bad = [p.wait() for p, _ in procs]
    if any(bad):
        raise RuntimeError(f"clients exited with {bad}")


def measure(arm, client, n, k, seconds):
    """One point: n busy tenants for `seconds`."""
    image = arm.image()
    arm.start()
    procs = []
    try:
        start_clients(arm, client, image, "empty", n, k, seconds, procs)
        pids = arm.daemon_pids()
        cpu0, t0 = cpu_seconds(pids), time.monotonic()
        for p, _ in procs:
            p.stdin.write(b"go\n")
            p.stdin.flush()
        rounds = 0
        for p, _ in procs:
            words = p.stdout.readline().decode().split()
            if not words or words[0] != "done":
                raise RuntimeError(f"a client failed (said {words}); see {arm.work}")
            rounds += int(words[1])
        wall = time.monotonic() - t0
        pids = arm.daemon_pids() or pids
        cpu = cpu_seconds(pids) - cpu0
        lat = array("I")
        for _, out in procs:
            with open(out, "rb") as f:
                lat.frombytes(f.read())
        end_clients(procs)
    finally:
        kill_leftovers(procs)
        arm.stop()
    commands = rounds * (k + 1)
    rounds_sorted = sorted(lat)
    us = lambda ns: None if ns is None else ns / 1e3
    r50, r99 = us(percentile(rounds_sorted, 0.5)), us(percentile(rounds_sorted, 0.99))
    per = lambda v: None if v is None else v / (k + 1)
    return {
        "tenants": n,
        "k": k,
        "seconds": seconds,
        "wall_s": round(wall, 3),
        "rounds": rounds,
        "commands": commands,
        "cmds_per_s": commands / seconds,
        "round_p50_us": r50,
        "round_p99_us": r99,
        "cmd_p50_us": per(r50),
        "cmd_p99_us": per(r99),
        "daemon_cpu_s": cpu if pids else None,
        "daemon_cpu_per_cmd_us": cpu / commands * 1e6 if pids and commands else None,
    }


def measure_idle(arm, client, n, seconds):
    """n clients connected and idle for `seconds`: the daemon's CPU use, in % of one core."""
    image = arm.image()
    arm.start()
    procs = []
    try:
        start_clients(arm, client, image, "empty", n, 1, 0, procs)
        time.sleep(1.0)  # let the session threads settle into their idle sleep
        pids = arm.daemon_pids()
        cpu0, t0 = cpu_seconds(pids), time.monotonic()
        time.sleep(seconds)
        cpu, wall = cpu_seconds(pids) - cpu0, time.monotonic() - t0
        for p, _ in procs:
            p.stdin.write(b"go\n")
            p.stdin.flush()
        for p, _ in procs:
            p.stdout.readline()
        end_clients(procs)
    finally:
        kill_leftovers(procs)
        arm.stop()
    return {
        "clients": n,
        "seconds": round(wall, 3),
        "daemon_cpu_s": cpu if pids else None,
        "core_percent": 100 * cpu / wall if pids else None,
        "tick_s": 1 / CLK_TCK,
    }


def median_of(points, key):
    vals = [p[key] for p in points if p.get(key) is not None]
    return statistics.median(vals) if vals else None


def summarize(series_points):
    """Median over repeats per N, and ratios against N = 1."""
    by_n = {}
    for p in series_points:
        by_n.setdefault(p["tenants"], []).append(p)
    keys = ["cmds_per_s", "cmd_p50_us", "cmd_p99_us", "round_p50_us", "round_p99_us",
            "daemon_cpu_per_cmd_us"]
    rows = []
    for n in sorted(by_n):
        rows.append({"tenants": n, "repeats": len(by_n[n]),
                     **{k: median_of(by_n[n], k) for k in keys}})
    base = rows[0] if rows and rows[0]["tenants"] == 1 else None
    for r in rows:
        for k in keys:
            b = base and base[k]
            r[k + "_vs_1"] = r[k] / b if b and r[k] is not None else None
    return rows


def fmt(v, digits=2):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def write_md(path, meta, series, idle):
    lines = [f"# Scale benchmark ({meta['date']})", "",
             f"Command: `{meta['command']}`", "",
             f"Commit {meta['commit']}; {meta['cpus']} CPUs; load average before "
             f"{meta['loadavg_before']}, after {meta['loadavg_after']}. K = {meta['k']} "
             f"launches per synchronisation, {meta['seconds']} s per point, "
             f"{meta['repeats']} repeat(s) (medians). {meta['note']}", "",
             "A command is a launch or a synchronisation (K + 1 per round); per-command "
             "latency is a round's wall time divided by K + 1; daemon CPU is utime + stime "
             "of the daemon process over the measured period, divided by the commands.", ""]
    for name, rows in series.items():
        lines += [f"## {name}", "",
                  "| N | commands/s | vs N=1 | cmd p50 us | vs N=1 | cmd p99 us | vs N=1 "
                  "| daemon CPU us/cmd | vs N=1 |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            lines.append(
                f"| {r['tenants']} | {fmt(r['cmds_per_s'])} | {fmt(r['cmds_per_s_vs_1'])} "
                f"| {fmt(r['cmd_p50_us'])} | {fmt(r['cmd_p50_us_vs_1'])} "
                f"| {fmt(r['cmd_p99_us'])} | {fmt(r['cmd_p99_us_vs_1'])} "
                f"| {fmt(r['daemon_cpu_per_cmd_us'])} | {fmt(r['daemon_cpu_per_cmd_us_vs_1'])} |")
        lines.append("")
    if idle:
        lines += ["## Idle clients", "",
                  "| series | clients | seconds | daemon CPU s | % of one core |",
                  "| --- | --- | --- | --- | --- |"]
        for name, rs in idle.items():
            for r in rs:
                lines.append(f"| {name} | {r['clients']} | {fmt(r['seconds'])} "
                             f"| {fmt(r['daemon_cpu_s'], 3)} | {fmt(r['core_percent'], 3)} |")
        lines.append("")
        lines.append(f"CPU time is read in clock ticks of {1 / CLK_TCK * 1e3:.0f} ms.")
        lines.append("")
    Path(path).write_text("\n".join(lines))


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", default="sim", help="comma-separated: sim, baton, native, mps")
    ap.add_argument("--bins", action="append", default=[],
                    help="LABEL=DIR with batond and the shim (libcuda.so.1 or libcuda.so); "
                         "repeat to compare builds in one run [default: baton=.carry/bin if it "
                         "has batond, else target/release]")
    ap.add_argument("--policies", default="passthrough",
                    help="comma-separated Baton policies (sim and baton arms)")
    ap.add_argument("--tenants", default="1,2,4,8,16,32,64")
    ap.add_argument("--k", type=int, default=8, help="launches per synchronisation")
    ap.add_argument("--seconds", type=float, default=3.0, help="per point")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--idle", type=int, default=64, help="idle clients (0: skip)")
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--note", default="", help="a sentence for the report (e.g. machine load)")
    ap.add_argument("--no-build", action="store_true",
                    help="do not build target/release first (when it is the default binaries)")
    ap.add_argument("--out", default=None,
                    help="directory for scale.json and scale.md [default: print only]")
    args = ap.parse_args()

    arms = [a for a in args.arms.split(",") if a]
    for a in arms:
        if a not in ("sim", "baton", "native", "mps"):
            ap.error(f"unknown arm {a}")
    bins = [b.split("=", 1) for b in (args.bins or [f"baton={default_bins()}"])]
    if any(len(b) != 2 for b in bins):
        ap.error("--bins takes LABEL=DIR")
    # The default binaries come from this checkout: build them first, so that the figures are
    # this commit's (a no-op when they are up to date).
    needs_baton = any(a in ("sim", "baton") for a in arms)
    if needs_baton and not args.bins and not args.no_build \
            and Path(bins[0][1]) == ROOT / "target" / "release":
        subprocess.run(["cargo", "build", "--release", "-p", "baton-daemon", "-p", "baton-shim"],
                       cwd=ROOT, check=True)
    tenants = [int(x) for x in args.tenants.split(",")]
    policies = args.policies.split(",")

    work = Path(tempfile.mkdtemp(prefix="baton-scale-"))
    client = work / "scale_client"
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-o", str(client),
                    str(HERE / "scale_client.c"), "-ldl"], check=True)

    configs = []
    for arm in arms:
        if arm in ("sim", "baton"):
            for label, d in bins:
                for pol in policies:
                    configs.append((f"{arm} {label} {pol}", arm, d, pol))
        else:
            configs.append((arm, arm, None, None))

    loadavg_before = " ".join(open("/proc/loadavg").read().split()[:3])
    points = {name: [] for name, *_ in configs}
    for rep in range(args.repeats):
        for n in tenants:
            for name, kind, d, pol in configs:
                arm = Arm(kind, d, pol, work)
                p = measure(arm, client, n, args.k, args.seconds)
                p["repeat"] = rep
                points[name].append(p)
                print(f"{name:>28} N={n:<3} {p['cmds_per_s']:>12,.0f} cmd/s  "
                      f"p50 {fmt(p['cmd_p50_us'])} us  p99 {fmt(p['cmd_p99_us'])} us  "
                      f"daemon {fmt(p['daemon_cpu_per_cmd_us'])} us/cmd", flush=True)
    idle = {}
    if args.idle:
        for rep in range(args.repeats):
            for name, kind, d, pol in configs:
                if kind == "native":
                    continue
                r = measure_idle(Arm(kind, d, pol, work), client, args.idle, args.idle_seconds)
                idle.setdefault(name, []).append(r)
                print(f"{name:>28} idle x{args.idle}: {fmt(r['core_percent'], 3)}% of a core",
                      flush=True)
    series = {name: summarize(ps) for name, ps in points.items()}
    meta = {
        "command": shlex.join(["python3", Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "cpus": os.cpu_count(),
        "loadavg_before": loadavg_before,
        "loadavg_after": " ".join(open("/proc/loadavg").read().split()[:3]),
        "k": args.k,
        "seconds": args.seconds,
        "repeats": args.repeats,
        "note": args.note,
    }
    result = {"meta": meta, "series": series, "points": points, "idle": idle}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "scale.json").write_text(json.dumps(result, indent=1) + "\n")
        write_md(out / "scale.md", meta, series, idle)
        print(f"wrote {out}/scale.json and {out}/scale.md")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
