"""One tenant of the multi-tenant benchmark. Roles:

    tenant.py lat  --name N --model M --sync-dir D --out F.json (--rates R1,R2.. | --capacity-seconds C --load-factor X) ...
    tenant.py be   --name N --work gemm|train|infer64 --sync-dir D --out F.json --window-seconds S ...
    tenant.py capacity --models M1,M2,.. --seconds C --out F.json

Start-up handshake with the driver (driver.py): after loading and warming up, a tenant writes
SYNC_DIR/ready.NAME, keeps its work going (so every tenant reaches steady state together), and
polls SYNC_DIR/go, which holds {"t0": T} in time.monotonic() seconds. CLOCK_MONOTONIC is one
clock for all processes of a Linux machine, so every tenant measures the same window.

Latency role: open-loop arrivals, one request served at a time in arrival order, latency =
completion time minus *scheduled* arrival time, so time spent behind the tenant's own backlog
counts (as it does for a real server's clients). Phase k's window is
[t0 + k (S + G), t0 + k (S + G) + S) for --phase-seconds S and --gap G; requests of a phase still
unserved when the next phase starts (after the last phase: --drain seconds after its end) are
counted as censored at the time they had waited.

Best-effort role: units back to back, --depth outstanding; throughput = units that completed
inside [t0, t0 + window) / window. It keeps running after the window (up to --tail seconds, or
until the latency tenants named in --wait-done have finished) so the latency tenant's drain
still competes with it.
"""

import argparse
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    arrival_offsets,
    latency_summary,
    phase_seed,
    read_json,
    service_summary,
    write_json,
)

now = time.monotonic


def sleep_until(t):
    # time.sleep overshoots by ~50-100 us; spinning over the last 2 ms keeps that out of the
    # latency of small models whose requests take about as long.
    while True:
        d = t - now()
        if d <= 0:
            return
        if d > 0.002:
            time.sleep(d - 0.0015)


def touch(path):
    with open(path, "w") as f:
        f.write(f"{os.getpid()} {now():.6f}\n")


def wait_go(sync_dir, name, step, timeout):
    """Announces readiness, runs `step()` until the driver says go; returns t0."""
    touch(os.path.join(sync_dir, f"ready.{name}"))
    go = os.path.join(sync_dir, "go")
    limit = now() + timeout
    while True:
        g = read_json(go)
        if g is not None:
            return float(g["t0"])
        if now() > limit:
            raise TimeoutError(f"no {go} within {timeout} s of being ready")
        step()


def serve_phase(request, arrivals, deadline, clock=None, sleep=None, services=None, stalls=None):
    """Serves absolute arrival times in order, none after `deadline`.

    Returns (latencies, censored, completion times); `clock`/`sleep` are replaceable for tests.
    `services`, if given, receives each request's own service time (start to completion,
    without the backlog before it): near saturation the tail of a single-server queue is set
    by the service time, so this tells a slower request from a longer queue. `stalls`, if given,
    receives for each request how late it started: after its arrival or the previous
    completion, whichever is later. An ideal server starts at once; time here is time the
    tenant's process did not run (a late wake-up from sleep, the CPU given to others).
    """
    clock = clock or now
    sleep = sleep or sleep_until
    lat, cens, done = [], [], []
    free = float("-inf")  # when the previous request completed
    for i, a in enumerate(arrivals):
        t = clock()
        if t >= deadline:
            cens.extend(deadline - x for x in arrivals[i:])
            break
        if a > t:
            sleep(a)
            t = clock()
        if stalls is not None:
            stalls.append(max(0.0, t - max(a, free)))
        request()
        c = clock()
        if services is not None:
            services.append(c - t)
        lat.append(c - a)
        done.append(c)
        free = c
    return lat, cens, done


def measure_capacity(request, seconds):
    """Closed-loop requests per second and mean service time of the tenant alone."""
    n, t0 = 0, now()
    while True:
        request()
        n += 1
        el = now() - t0
        if el >= seconds and n >= 5:
            return n / el, el / n


def run_lat(a):
    from models import latency_request

    if not 0 <= a.worker < a.workers:
        raise SystemExit(f"lat: --worker {a.worker} is not one of 0..{a.workers - 1} (--workers {a.workers})")
    out = {"role": "lat", "name": a.name, "model": a.model, "pid": os.getpid(), "arrivals": a.arrivals,
           "workers": a.workers, "worker": a.worker}
    t_start = now()
    issued = []
    request = latency_request(a.model, fake=a.fake, issued=issued)
    for _ in range(a.warmup_requests):
        request()
    out["load_s"] = round(now() - t_start, 3)
    if a.capacity_seconds > 0:
        cap, svc = measure_capacity(request, a.capacity_seconds)
        out["capacity_rps"] = round(cap, 3)
        out["service_ms"] = round(svc * 1e3, 4)
    if a.rates:
        rates = [float(r) for r in a.rates.split(",")]
    elif a.load_factor and "capacity_rps" in out:
        rates = [a.load_factor * out["capacity_rps"]]
    else:
        raise SystemExit("lat: give --rates, or --capacity-seconds with --load-factor")
    out["rates"] = rates
    write_json(a.out, dict(out, state="ready"))

    # Warm-up traffic until the go, at about the first phase's rate; the pause is capped so the
    # tenant notices the go well within the driver's margin.
    pause = min(1.0 / rates[0], 0.2)
    pre = lambda: (request(), time.sleep(pause))
    t0 = wait_go(a.sync_dir, a.name, pre, a.go_timeout)
    out["late_start_s"] = round(max(0.0, now() - t0), 4)
    phases = []
    period = a.phase_seconds + a.gap
    for k, rate in enumerate(rates):
        start = t0 + k * period
        end = start + a.phase_seconds
        deadline = start + period if k + 1 < len(rates) else end + a.drain
        offs = arrival_offsets(a.arrivals, rate, a.phase_seconds, phase_seed(a.seed, k), a.sigma)
        # One of several workers of a model: every worker draws the model's whole stream and
        # serves its share, round-robin, as a load balancer in front of them would.
        offs = offs[a.worker :: a.workers]
        sleep_until(start)
        svc, stalls = [], []
        issued.clear()
        arr = [start + o for o in offs]
        lat, cens, done = serve_phase(request, arr, deadline, services=svc, stalls=stalls)
        completed = sum(1 for c in done if c < end)
        s = latency_summary(lat, cens, a.phase_seconds, completed)
        # The wait for the GPU: from each request's hand-over to its completion.
        waits = [c - i for c, i in zip(done, issued)]
        s.update(service_summary(svc, waits, stalls))
        if a.workers > 1:
            # The driver merges the workers of a model from these (percentiles do not add up).
            s["raw"] = {"lat": lat, "cens": cens, "svc": svc, "sync": waits, "stall": stalls,
                        "completed": completed, "window_s": a.phase_seconds}
        s.update(rate=round(rate, 4), offered=len(offs))
        phases.append(s)
    out["phases"] = phases
    out["state"] = "done"
    write_json(a.out, out)
    touch(os.path.join(a.sync_dir, f"done.{a.name}"))


def run_be(a):
    from models import BestEffort

    out = {"role": "be", "name": a.name, "work": a.work, "pid": os.getpid(), "depth": a.depth}
    t_start = now()
    be = BestEffort(a.work, a.depth, gemm_n=a.gemm_n, fake=a.fake)
    for _ in range(a.warmup_units):
        be.issue()
    be.drain()
    out["load_s"] = round(now() - t_start, 3)
    write_json(a.out, dict(out, state="ready"))

    t0 = wait_go(a.sync_dir, a.name, be.issue, a.go_timeout)
    out["late_start_s"] = round(max(0.0, now() - t0), 4)
    end = t0 + a.window_seconds
    stop = end + a.tail
    waits = [os.path.join(a.sync_dir, f"done.{n}") for n in a.wait_done.split(",") if n]
    units, next_check = 0, 0.0
    while True:
        for c in be.issue():
            units += t0 <= c < end
        t = now()
        if t >= end and t >= next_check:
            if t >= stop or all(os.path.exists(w) for w in waits):
                break
            next_check = t + 0.05
    for c in be.drain():
        units += t0 <= c < end
    out.update(
        state="done",
        units=units,
        window_s=a.window_seconds,
        throughput=round(units * be.per_unit / a.window_seconds, 4),
        unit=be.unit_name,
    )
    if be.flop_per_unit:
        out["tflops"] = round(units * be.flop_per_unit / a.window_seconds / 1e12, 2)
    write_json(a.out, out)


def run_capacity(a):
    from models import latency_request

    out = {"role": "capacity", "pid": os.getpid(), "models": {}}
    for m in a.models.split(","):
        request = latency_request(m, fake=a.fake)
        for _ in range(a.warmup_requests):
            request()
        cap, svc = measure_capacity(request, a.seconds)
        out["models"][m] = {"capacity_rps": round(cap, 3), "service_ms": round(svc * 1e3, 4)}
        print(f"capacity {m}: {cap:.1f} requests/s alone ({svc * 1e3:.3f} ms each)", flush=True)
        del request
    out["state"] = "done"
    write_json(a.out, out)


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="role", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True)
    common.add_argument("--fake", action="store_true", help="sleep instead of GPU work (local tests)")
    common.add_argument("--warmup-requests", type=int, default=20)
    for role in ("lat", "be"):
        q = sub.add_parser(role, parents=[common])
        q.add_argument("--name", required=True)
        q.add_argument("--sync-dir", required=True)
        q.add_argument("--go-timeout", type=float, default=300.0)
        if role == "lat":
            q.add_argument("--model", required=True)
            q.add_argument("--arrivals", choices=["poisson", "lognormal"], default="poisson")
            q.add_argument("--sigma", type=float, default=0.0)
            q.add_argument("--seed", type=int, default=1)
            q.add_argument("--rates", default="", help="requests/s, one per phase")
            q.add_argument("--capacity-seconds", type=float, default=0.0)
            q.add_argument("--load-factor", type=float, default=0.0)
            q.add_argument("--phase-seconds", type=float, required=True)
            q.add_argument("--gap", type=float, default=2.0)
            q.add_argument("--drain", type=float, default=5.0)
            q.add_argument("--workers", type=int, default=1, help="processes serving this model")
            q.add_argument("--worker", type=int, default=0, help="which of them this is (0-based)")
        else:
            q.add_argument("--work", required=True)
            q.add_argument("--depth", type=int, default=4)
            q.add_argument("--gemm-n", type=int, default=8192)
            q.add_argument("--warmup-units", type=int, default=5)
            q.add_argument("--window-seconds", type=float, required=True)
            q.add_argument("--tail", type=float, default=6.0)
            q.add_argument("--wait-done", default="")
    q = sub.add_parser("capacity", parents=[common])
    q.add_argument("--models", required=True)
    q.add_argument("--seconds", type=float, default=2.0)
    return p


def main(argv=None):
    a = parser().parse_args(argv)
    try:
        {"lat": run_lat, "be": run_be, "capacity": run_capacity}[a.role](a)
    except BaseException as e:
        if isinstance(e, SystemExit) and not e.code:
            raise
        msg = traceback.format_exc()
        sys.stderr.write(msg)
        prev = read_json(a.out, {}) or {}
        prev.update(state="failed", error=msg.strip().splitlines()[-1][:500])
        write_json(a.out, prev)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
