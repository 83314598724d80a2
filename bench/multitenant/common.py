"""Pieces shared by the tenant, the driver and the report: arrivals, percentiles, summaries.

Standard library only, so the report and the tests run on machines without numpy or torch.
"""

import json
import math
import os
import random

# Per-phase arrival streams are drawn from one seeded generator per tenant, so every arm of a
# run replays exactly the same arrival times (relative to its own start).


def interarrival_sampler(kind, rate, sigma, rng):
    """Returns a function drawing one inter-arrival gap (seconds) with mean 1/rate."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    mean = 1.0 / rate
    if kind == "poisson":
        return lambda: rng.expovariate(rate)
    if kind == "lognormal":
        if sigma <= 0:
            raise ValueError(f"lognormal sigma must be positive, got {sigma}")
        # E[exp(N(mu, s^2))] = exp(mu + s^2/2): choose mu so that the mean gap is 1/rate and the
        # offered load is what was asked for, whatever sigma does to burstiness.
        mu = math.log(mean) - sigma * sigma / 2.0
        return lambda: rng.lognormvariate(mu, sigma)
    raise ValueError(f"unknown arrival process {kind!r} (poisson | lognormal)")


def arrival_offsets(kind, rate, duration, seed, sigma=0.0):
    """Arrival times in [0, duration) seconds from the start of a window, sorted."""
    rng = random.Random(seed)
    draw = interarrival_sampler(kind, rate, sigma, rng)
    out = []
    t = draw()
    while t < duration:
        out.append(t)
        t += draw()
    return out


def phase_seed(seed, phase):
    # Distinct, reproducible streams per phase; a large odd multiplier keeps neighbouring
    # (seed, phase) pairs from overlapping.
    return (seed * 1_000_003 + phase * 7919) & 0xFFFFFFFF


def percentile(sorted_values, q):
    """Linear-interpolated percentile (numpy's default) of an already sorted list; None if empty."""
    n = len(sorted_values)
    if n == 0:
        return None
    if n == 1:
        return sorted_values[0]
    pos = (n - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def ms(seconds):
    """Seconds to milliseconds, 4 decimals; None stays None."""
    return None if seconds is None else round(seconds * 1e3, 4)


def latency_summary(latencies_s, censored_s, window_s, completed_in_window):
    """p50/p99/mean in ms over every request of a window.

    censored_s: requests not finished when the window's drain time ran out, each counted with
    the time it had waited by then (a lower bound), so an overloaded arm cannot look better by
    leaving its slowest requests out. `censored` says how many; when it is above 1% of the
    requests, p99 is a lower bound.
    """
    allv = sorted(list(latencies_s) + list(censored_s))
    n = len(allv)
    return {
        "n": n,
        "censored": len(censored_s),
        "p50_ms": ms(percentile(allv, 50)),
        "p90_ms": ms(percentile(allv, 90)),
        "p99_ms": ms(percentile(allv, 99)),
        "max_ms": ms(allv[-1] if allv else None),
        "mean_ms": ms(sum(allv) / n if n else None),
        "p99_is_lower_bound": bool(n and len(censored_s) > 0.01 * n),
        "throughput": round(completed_in_window / window_s, 4) if window_s > 0 else None,
        "unit": "requests/s",
    }


def service_summary(services_s, waits_s=(), stalls_s=()):
    """Where a latency tenant's time went, in ms: `service_*` (p50/p99/mean/max) of requests'
    own service times (no queueing); `sync_*` of the part of them spent waiting for the GPU
    after handing the work over; `stall_*` of how late requests started although the tenant
    was free (time its process did not run), with `stall_total_ms` their sum and
    `stalls_over_1ms` how many were longer than 1 ms. Keys of empty inputs are left out,
    except `service_*`."""
    out = {}
    for name, values in (("service", services_s), ("sync", waits_s), ("stall", stalls_s)):
        v = sorted(values)
        if not v and name != "service":
            continue
        out.update({
            f"{name}_p50_ms": ms(percentile(v, 50)),
            f"{name}_p99_ms": ms(percentile(v, 99)),
            f"{name}_mean_ms": ms(sum(v) / len(v) if v else None),
            f"{name}_max_ms": ms(v[-1] if v else None),
        })
    if stalls_s:
        out["stall_total_ms"] = ms(sum(stalls_s))
        out["stalls_over_1ms"] = sum(1 for x in stalls_s if x > 0.001)
    return out


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def write_json(path, obj):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=False, allow_nan=False)
        f.write("\n")
    # Readers poll for these files: rename makes them appear complete or not at all.
    os.replace(tmp, path)
