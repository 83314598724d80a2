"""Runs one arm of the multi-tenant benchmark: starts its tenants, lines up their measured window,
enforces timeouts, collects their results. run.sh owns batond and MPS; this owns the tenants.

    driver.py arm --scenario a|b --arm ARM --work-dir W --out F.json [options]
    driver.py capacity --models M1,M2 --work-dir W --out F.json
    driver.py baton-config --scenario a|b --arm ARM --out F.toml [--models ..] [--srpt-fairness X]
    driver.py rate --from F.json           (prints the latency tenant's rate measured alone)

Arms: alone_lat, alone_be (scenario a baselines, native), native, mps, mps_tuned,
baton_passthrough, baton_priority, baton_fair, baton_srpt.
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import latency_summary, read_json, service_summary, write_json  # noqa: E402

now = time.monotonic

ARMS_A = ["alone_lat", "alone_be", "native", "mps", "mps_tuned",
          "baton_passthrough", "baton_priority", "baton_fair", "baton_srpt"]
ARMS_B = ["native", "mps", "mps_tuned", "baton_passthrough", "baton_priority", "baton_fair", "baton_srpt"]
BATON_POLICY = {"baton_passthrough": "passthrough", "baton_priority": "priority",
                "baton_fair": "fair", "baton_srpt": "srpt"}
# Scenario a under fair: the latency tenant's weight. It asks for half of what it could do alone,
# so a share well above one half keeps its bursts from queueing behind the batch tenant.
LAT_WEIGHT = 4

# How long the tenants get to start after the go is written: each must see it within this.
GO_MARGIN_S = 2.0


def scrub_env(keep_mps):
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("BATON_") or k == "LD_PRELOAD"
                   or (k.startswith("CUDA_MPS_") and not keep_mps))}
    if not keep_mps:
        env.pop("CUDA_MPS_PIPE_DIRECTORY", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def tenant_env(a, arm, name, best_effort):
    """Environment of one tenant process under `arm`."""
    mps = arm in ("mps", "mps_tuned")
    env = scrub_env(keep_mps=mps)
    if mps and "CUDA_MPS_PIPE_DIRECTORY" not in env:
        raise SystemExit(f"arm {arm}: CUDA_MPS_PIPE_DIRECTORY is not set (run.sh starts MPS and sets it)")
    if arm == "mps_tuned" and best_effort:
        env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(a.mps_threads)
        env["CUDA_MPS_CLIENT_PRIORITY"] = str(a.mps_priority)
    if arm in BATON_POLICY:
        if not a.sock or not a.shim:
            raise SystemExit(f"arm {arm}: --sock and --shim are required")
        env.update(BATON_SOCKET=a.sock, LD_PRELOAD=a.shim, BATON_TENANT=tenant_of(name))
    return env


WORKER_SEP = ".w"


def tenant_of(name):
    """The tenant (model) a process serves: worker `mlp.w1` serves `mlp`."""
    return name.split(WORKER_SEP, 1)[0]


def combine_repeats(runs):
    """One arm result from repeated runs of it (same arrivals each time): per model and load,
    the median of each figure over the runs that went fine, and every run's p99 under
    `p99_ms_runs`, so that a single run's hiccup neither decides nor hides."""
    good = [r for r in runs if r.get("ok")] or runs
    out = {k: v for k, v in good[0].items() if k != "tenants"}
    out["repeats"] = len(good)
    notes = [f"run {i + 1}: {r.get('note') or ('ok' if r.get('ok') else 'failed')}"
             for i, r in enumerate(runs) if not r.get("ok") or r.get("note")]
    out["note"] = "; ".join(notes)
    out["ok"] = all(r.get("ok") for r in runs)
    out["wall_s"] = round(sum(r.get("wall_s") or 0 for r in runs), 1)
    tenants = {}
    for name in good[0].get("tenants") or {}:
        ts = [r["tenants"][name] for r in good if name in (r.get("tenants") or {})]
        t = {k: v for k, v in ts[0].items() if k != "phases"}
        phases = []
        for k in range(min(len(x.get("phases") or []) for x in ts)):
            ph = [x["phases"][k] for x in ts]
            m = {}
            for key, v in ph[0].items():
                vals = [p.get(key) for p in ph]
                if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vals):
                    m[key] = round(statistics.median(vals), 4)
                elif all(isinstance(x, bool) for x in vals):
                    m[key] = sum(vals) * 2 > len(vals)
                else:
                    m[key] = v
            m["p99_ms_runs"] = [p.get("p99_ms") for p in ph]
            phases.append(m)
        t["phases"] = phases
        tenants[name] = t
    out["tenants"] = tenants
    return out


def run_combine(a):
    runs = [read_json(f) for f in a.inputs]
    missing = [f for f, r in zip(a.inputs, runs) if r is None]
    if missing:
        print(f"cannot read {', '.join(missing)}", file=sys.stderr)
        return 1
    write_json(a.out, combine_repeats(runs))
    return 0


def merge_workers(parts):
    """One tenant entry from the entries of a model's workers, as if one process had served
    every request: per phase, the workers' raw samples are pooled and summarised again."""
    first = parts[0]
    out = {k: v for k, v in first.items() if k not in ("phases", "pid", "worker", "late_start_s")}
    out["pids"] = [p.get("pid") for p in parts]
    out["late_start_s"] = max(p.get("late_start_s", 0) or 0 for p in parts)
    bad = [p for p in parts if p.get("state") != "done"]
    if bad:
        out["state"] = bad[0].get("state")
        if bad[0].get("error"):
            out["error"] = bad[0]["error"]
        return out
    phases = []
    for k in range(min(len(p.get("phases") or []) for p in parts)):
        raw = [p["phases"][k].get("raw") or {} for p in parts]
        pool = lambda key: [x for r in raw for x in r.get(key, [])]
        s = latency_summary(pool("lat"), pool("cens"), raw[0].get("window_s", 0.0),
                            sum(r.get("completed", 0) for r in raw))
        s.update(service_summary(pool("svc"), pool("sync"), pool("stall")))
        s.update(rate=parts[0]["phases"][k].get("rate"),
                 offered=sum(p["phases"][k].get("offered", 0) for p in parts))
        phases.append(s)
    out["phases"] = phases
    return out


def b_plan(models, cap, loads):
    """Per model, its rate at each offered load: load x (its capacity alone) / (number of models).

    At load 1 the models together ask for exactly as much GPU time as the GPU has if their
    requests ran one at a time, each as fast as alone.
    """
    n = len(models)
    out = {}
    for m in models:
        c = cap["models"][m]["capacity_rps"]
        out[m] = [l * c / n for l in loads]
    return out


def smallest_first(models, cap):
    return sorted(models, key=lambda m: -cap["models"][m]["capacity_rps"])


def tenants_for(a):
    """[(name, best_effort, argv)] of the arm's tenant processes."""
    py = [sys.executable, os.path.join(HERE, "tenant.py")]
    sync = os.path.join(a.run_dir, "sync")
    fake = ["--fake"] if a.fake else []
    out = []

    def lat(name, model, extra, seed, best_effort=False):
        argv = py + ["lat", "--name", name, "--model", model, "--sync-dir", sync,
                     "--out", os.path.join(a.run_dir, f"{name}.json"), "--seed", str(seed)] + fake + extra
        out.append((name, best_effort, argv))

    if a.scenario == "a":
        if a.arm != "alone_be":
            if a.arm == "alone_lat" and a.rate <= 0:
                rate = ["--capacity-seconds", str(a.capacity_seconds), "--load-factor", str(a.load_factor)]
            else:
                if a.rate <= 0:
                    raise SystemExit(f"arm {a.arm}: no --rate (run alone_lat first, or pass --rate)")
                rate = ["--rates", repr(a.rate)]
            lat("lat", a.lat_model, rate + ["--arrivals", "poisson", "--phase-seconds", str(a.duration),
                                           "--drain", str(a.drain)], a.seed)
        if a.arm != "alone_lat":
            solo = a.arm == "alone_be"
            argv = py + ["be", "--name", "be", "--work", a.be_work, "--sync-dir", sync,
                         "--out", os.path.join(a.run_dir, "be.json"), "--depth", str(a.depth),
                         "--gemm-n", str(a.gemm_n), "--window-seconds", str(a.duration),
                         "--tail", "0" if solo else str(a.drain + 1.0)] + fake
            if not solo:
                argv += ["--wait-done", "lat"]
            out.append(("be", True, argv))
    else:
        cap = read_json(a.capacity_json)
        if not cap or cap.get("state") != "done":
            raise SystemExit(f"no usable capacity file {a.capacity_json}")
        models = a.models.split(",")
        plan = b_plan(models, cap, a.loads_list)
        largest = smallest_first(models, cap)[-1]
        for i, m in enumerate(models):
            extra = ["--rates", ",".join(repr(r) for r in plan[m]), "--arrivals", "lognormal",
                     "--sigma", str(a.sigma), "--phase-seconds", str(a.duration), "--gap", str(a.gap),
                     "--drain", str(a.gap)]
            # Different arrival streams per model, the same ones in every arm. The largest model
            # plays the best-effort part where an arm treats tenants differently (mps_tuned).
            for w in range(a.workers):
                name, more = m, []
                if a.workers > 1:
                    name, more = f"{m}{WORKER_SEP}{w}", ["--workers", str(a.workers), "--worker", str(w)]
                lat(name, m, extra + more, a.seed + 101 * (i + 1), best_effort=(m == largest))
    return out


def expected_seconds(a):
    """Measured span after the go: what the tenants should need once started."""
    if a.scenario == "a":
        return a.duration + a.drain + 2.0
    return len(a.loads_list) * (a.duration + a.gap) + 2.0


def kill_group(p, sig):
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_all(procs, grace=5.0):
    live = [p for p in procs if p.poll() is None]
    for p in live:
        kill_group(p, signal.SIGTERM)
    limit = now() + grace
    for p in live:
        try:
            p.wait(timeout=max(0.1, limit - now()))
        except subprocess.TimeoutExpired:
            kill_group(p, signal.SIGKILL)
            p.wait()


def run_arm(a):
    a.run_dir = os.path.join(a.work_dir, f"{a.scenario}.{a.arm}")
    shutil.rmtree(a.run_dir, ignore_errors=True)
    os.makedirs(os.path.join(a.run_dir, "sync"))
    logs = os.path.join(a.work_dir, "logs")
    os.makedirs(logs, exist_ok=True)
    result = {"scenario": a.scenario, "arm": a.arm, "ok": False, "note": "", "tenants": {}}
    if a.scenario == "b":
        result["loads"] = a.loads_list
        result["sigma"] = a.sigma
    started = now()
    limit = started + a.timeout
    procs, names = [], []
    notes = []

    def finish():
        by_tenant = {}
        for name in names:
            t = read_json(os.path.join(a.run_dir, f"{name}.json"), {"state": "no output"})
            by_tenant.setdefault(tenant_of(name), []).append(t)
        for tenant, parts in by_tenant.items():
            result["tenants"][tenant] = parts[0] if len(parts) == 1 else merge_workers(parts)
        bad = [n for n, t in result["tenants"].items() if t.get("state") != "done"]
        for n in bad:
            t = result["tenants"][n]
            notes.append(f"{n}: {t.get('state')}{': ' + t['error'] if t.get('error') else ''}")
        late = {n: t.get("late_start_s", 0) for n, t in result["tenants"].items()}
        late = {n: v for n, v in late.items() if v and v > 0.1}
        if late:
            notes.append("late start (s): " + ", ".join(f"{n} {v}" for n, v in late.items()))
        result["ok"] = not bad and bool(names) and not any(n.startswith("FAILED") for n in notes)
        result["wall_s"] = round(now() - started, 1)
        result["note"] = "; ".join(notes)
        write_json(a.out, result)
        print(f"arm {a.scenario}/{a.arm}: {'ok' if result['ok'] else 'FAILED'} after {result['wall_s']} s"
              + (f" ({result['note']})" if result["note"] else ""), flush=True)
        return 0 if result["ok"] else 1

    def on_signal(sig, _frame):
        raise KeyboardInterrupt(f"signal {sig}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        for name, be, argv in tenants_for(a):
            env = tenant_env(a, a.arm, name, be)
            log = open(os.path.join(logs, f"{a.scenario}.{a.arm}.{name}.log"), "w")
            log.write(" ".join(argv) + "\n")
            log.flush()
            procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True, cwd=a.run_dir))
            log.close()
            names.append(name)
        sync = os.path.join(a.run_dir, "sync")
        ready_limit = min(limit, now() + a.ready_timeout)
        while True:
            missing = [n for n in names if not os.path.exists(os.path.join(sync, f"ready.{n}"))]
            if not missing:
                break
            dead = [n for n, p in zip(names, procs) if p.poll() is not None and n in missing]
            if dead:
                notes.append(f"FAILED: {', '.join(dead)} exited before ready")
                return finish()
            if now() > ready_limit:
                notes.append(f"FAILED: {', '.join(missing)} not ready within {round(ready_limit - started)} s")
                return finish()
            time.sleep(0.1)
        result["ready_s"] = round(now() - started, 1)
        t0 = now() + GO_MARGIN_S
        write_json(os.path.join(sync, "go"), {"t0": t0})
        end_limit = min(limit, t0 + expected_seconds(a) + a.slack)
        for name, p in zip(names, procs):
            try:
                p.wait(timeout=max(0.1, end_limit - now()))
            except subprocess.TimeoutExpired:
                notes.append(f"FAILED: {name} still running {round(end_limit - t0)} s after the go; killed")
                break
        for name, p in zip(names, procs):
            if p.returncode not in (None, 0):
                notes.append(f"{name} exit status {p.returncode}")
        return finish()
    except KeyboardInterrupt as e:
        notes.append(f"FAILED: interrupted ({e})")
        return finish()
    finally:
        stop_all(procs)


def run_capacity(a):
    os.makedirs(a.work_dir, exist_ok=True)
    argv = [sys.executable, os.path.join(HERE, "tenant.py"), "capacity", "--models", a.models,
            "--seconds", str(a.capacity_seconds), "--out", a.out] + (["--fake"] if a.fake else [])
    log = os.path.join(a.work_dir, "logs")
    os.makedirs(log, exist_ok=True)
    with open(os.path.join(log, "b.capacity.log"), "w") as f:
        p = subprocess.Popen(argv, env=scrub_env(False), stdout=f, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = p.wait(timeout=a.timeout)
        except subprocess.TimeoutExpired:
            rc = "timeout"
        finally:
            stop_all([p])
    cap = read_json(a.out)
    ok = bool(cap) and cap.get("state") == "done"
    print(f"capacity: {'ok' if ok else 'FAILED'} (exit {rc})"
          + "".join(f"\n  {m}: {v['capacity_rps']} requests/s alone, {v['service_ms']} ms each"
                    for m, v in ((cap or {}).get("models") or {}).items()), flush=True)
    return 0 if ok else 1


def baton_config(a):
    policy = BATON_POLICY[a.arm]
    lines = ["# Written by bench/multitenant/driver.py for one arm of the benchmark.", "[daemon]",
             f'policy = "{policy}"', 'metrics_listen = "off"']
    if policy == "srpt":
        lines.append(f"srpt_fairness = {float(a.srpt_fairness)}")
    if a.issue_window_us and policy in ("priority", "fair", "srpt"):
        lines.append(f"issue_window_us = {int(a.issue_window_us)}")
    if a.scenario == "a":
        tenants = [("lat", "high", LAT_WEIGHT), ("be", "low", 1)]
    else:
        # Scenario b under priority: the smaller the model, the higher its class (integer levels);
        # under fair all weigh the same.
        cap = read_json(a.capacity_json) if a.capacity_json else None
        models = a.models.split(",")
        order = smallest_first(models, cap) if cap and cap.get("models") else models
        tenants = [(m, str(min(i, 7)), 1) for i, m in enumerate(order)]
    # Only the policy that reads a key gets it, so that no arm differs from passthrough in
    # anything but its policy.
    for name, cls, w in tenants:
        lines += ["", "[[tenant]]", f'name = "{name}"']
        if policy == "priority":
            lines.append(f"class = {cls}" if cls.isdigit() else f'class = "{cls}"')
        if policy == "fair":
            lines.append(f"weight = {w}")
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0


def alone_rate(a):
    r = read_json(a.from_file) or {}
    t = (r.get("tenants") or {}).get("lat") or {}
    rates = t.get("rates") or []
    if not r.get("ok") or not rates:
        return 1
    print(repr(rates[0]))
    return 0


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("arm")
    q.add_argument("--scenario", choices=["a", "b"], required=True)
    q.add_argument("--arm", required=True)
    q.add_argument("--work-dir", required=True)
    q.add_argument("--out", required=True)
    q.add_argument("--fake", action="store_true")
    q.add_argument("--timeout", type=float, default=240.0, help="whole arm, seconds")
    q.add_argument("--ready-timeout", type=float, default=150.0)
    q.add_argument("--slack", type=float, default=30.0, help="seconds past the expected end before killing")
    q.add_argument("--sock", default="")
    q.add_argument("--shim", default="")
    q.add_argument("--mps-threads", type=int, default=50)
    q.add_argument("--mps-priority", type=int, default=1)
    q.add_argument("--seed", type=int, default=1)
    q.add_argument("--duration", type=float, default=15.0, help="a: measured window; b: per load")
    # scenario a
    q.add_argument("--lat-model", default="resnet50")
    q.add_argument("--be-work", default="gemm")
    q.add_argument("--rate", type=float, default=0.0)
    q.add_argument("--capacity-seconds", type=float, default=3.0)
    q.add_argument("--load-factor", type=float, default=0.5)
    q.add_argument("--drain", type=float, default=5.0)
    q.add_argument("--depth", type=int, default=4)
    q.add_argument("--gemm-n", type=int, default=8192)
    # scenario b
    q.add_argument("--models", default="mlp,resnet18,resnet50_b8,encoder_large")
    q.add_argument("--capacity-json", default="")
    q.add_argument("--loads", default="0.25,0.5,0.75,1.0")
    q.add_argument("--sigma", type=float, default=1.5)
    q.add_argument("--gap", type=float, default=2.0)
    q.add_argument("--workers", type=int, default=1, help="processes serving each model's requests")
    q = sub.add_parser("capacity")
    q.add_argument("--models", required=True)
    q.add_argument("--work-dir", required=True)
    q.add_argument("--out", required=True)
    q.add_argument("--capacity-seconds", type=float, default=2.0)
    q.add_argument("--timeout", type=float, default=120.0)
    q.add_argument("--fake", action="store_true")
    q = sub.add_parser("baton-config")
    q.add_argument("--scenario", choices=["a", "b"], required=True)
    q.add_argument("--arm", required=True, choices=sorted(BATON_POLICY))
    q.add_argument("--out", required=True)
    q.add_argument("--models", default="mlp,resnet18,resnet50_b8,encoder_large")
    q.add_argument("--capacity-json", default="")
    q.add_argument("--srpt-fairness", type=float, default=0.5)
    q.add_argument("--issue-window-us", type=int, default=0, help="0: the daemon's default")
    q = sub.add_parser("rate")
    q.add_argument("--from", dest="from_file", required=True)
    q = sub.add_parser("combine", help="one arm result from repeated runs of it (medians)")
    q.add_argument("--out", required=True)
    q.add_argument("inputs", nargs="+")
    return p


def main(argv=None):
    a = parser().parse_args(argv)
    if a.cmd == "arm":
        arms = ARMS_A if a.scenario == "a" else ARMS_B
        if a.arm not in arms:
            raise SystemExit(f"scenario {a.scenario} has no arm {a.arm!r} (one of {', '.join(arms)})")
        a.loads_list = [float(x) for x in a.loads.split(",") if x]
        if a.workers < 1:
            raise SystemExit(f"--workers must be at least 1, got {a.workers}")
        return run_arm(a)
    return {"capacity": run_capacity, "baton-config": baton_config, "rate": alone_rate,
            "combine": run_combine}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
