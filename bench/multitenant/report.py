"""Results of the multi-tenant benchmark: merge, Markdown, PNG plots.

    report.py update --results R.json --scenario a|b --case C --arm-dir DIR --meta META.json
                     --command CMD [--note ARM=TEXT ...] --md R.md --png-dir DIR
        merges the arms one run.sh invocation measured (DIR/<scenario>.<arm>.json) into R.json,
        rewrites R.md and the PNGs from everything R.json holds, prints this case's table.
    report.py merge --results R.json --md R.md --png-dir DIR IN1.json IN2.json ...
        merges result files of separate invocations (e.g. each one's $OUT/multitenant.json).
    report.py render --results R.json --md R.md --png-dir DIR
    report.py rate --results R.json --case C
        prints the latency tenant's rate measured alone for scenario a's case C.
    report.py capacity --results R.json --case C --models M1,M2,.. --out F.json
        writes scenario b's stored capacities of case C as a capacity file (run.sh
        --reuse-capacity), so that separate invocations offer the same request rates.

Layout of R.json: {"scenarios": {"a": {CASE: {"arms": {ARM: {"tenants": {"lat": {...},
"be": {...}}}}}}, "b": {CASE: {"capacity": {...}, "arms": {ARM: {"loads": {LOAD: {"tenants":
{MODEL: {...}}}}}}}}}}; each tenant entry has p50_ms, p99_ms and throughput; ratios to the alone
arms and the targets are recomputed from the merged data every time.
"""

import argparse
import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import read_json, write_json  # noqa: E402

ARM_ORDER = ["alone_lat", "alone_be", "native", "mps", "mps_tuned",
             "baton_passthrough", "baton_priority", "baton_fair", "baton_srpt"]
ARM_LABEL = {
    "alone_lat": "latency tenant alone", "alone_be": "best-effort alone", "native": "native time-slicing",
    "mps": "MPS default", "mps_tuned": "MPS tuned", "baton_passthrough": "Baton passthrough",
    "baton_priority": "Baton priority", "baton_fair": "Baton fair", "baton_srpt": "Baton srpt",
}
TARGET_A = {"arm": "baton_priority", "max_p99_ratio": 1.5, "min_be_share": 0.7}
TARGET_B = {"p99_limit_ms": 100.0, "min_gain": 2.0, "baseline": "mps", "arm": "baton_srpt"}
LAT_KEYS = ["p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms", "service_p50_ms", "service_p99_ms",
            "service_mean_ms", "service_max_ms", "sync_p50_ms", "sync_p99_ms", "sync_mean_ms",
            "sync_max_ms", "stall_p50_ms", "stall_p99_ms", "stall_mean_ms", "stall_max_ms", "stall_total_ms",
            "stalls_over_1ms", "p99_ms_runs", "n", "censored", "p99_is_lower_bound",
            "throughput", "unit", "rate", "offered"]


def arm_sort(arms):
    return sorted(arms, key=lambda a: ARM_ORDER.index(a) if a in ARM_ORDER else len(ARM_ORDER))


def fmt(v, nd=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.1f}"
        return f"{v:.{nd}f}"
    return str(v)


def ratio(a, b):
    return round(a / b, 3) if a is not None and b not in (None, 0) else None


# ---------------------------------------------------------------- building entries from one run


def lat_entry(t, phase=0):
    ph = (t.get("phases") or [{}])[phase] if len(t.get("phases") or []) > phase else {}
    e = {k: ph.get(k) for k in LAT_KEYS if k in ph}
    e["model"] = t.get("model")
    for k in ("capacity_rps", "service_ms"):
        if k in t:
            e[k] = t[k]
    return e


def be_entry(t):
    return {k: t.get(k) for k in ("work", "throughput", "unit", "units", "tflops", "depth", "window_s") if k in t}


def arm_entry(scenario, res, meta, command, note):
    e = {"ok": bool(res.get("ok")), "note": "; ".join(x for x in (res.get("note"), note) if x),
         "date": meta.get("date"), "gpu": meta.get("gpu"), "commit": meta.get("commit"), "command": command,
         "wall_s": res.get("wall_s"), "repeats": res.get("repeats", 1)}
    tenants = res.get("tenants") or {}
    if scenario == "a":
        e["tenants"] = {}
        for name, t in tenants.items():
            e["tenants"][name] = lat_entry(t) if t.get("role") == "lat" else be_entry(t)
    else:
        e["sigma"] = res.get("sigma")
        e["loads"] = {}
        for k, load in enumerate(res.get("loads") or []):
            e["loads"][f"{load:g}"] = {"tenants": {n: lat_entry(t, k) for n, t in tenants.items()
                                                   if len(t.get("phases") or []) > k}}
    return e


def update(results, scenario, case, arm_dir, meta, command, notes, params):
    results.setdefault("scenarios", {}).setdefault(scenario, {})
    c = results["scenarios"][scenario].setdefault(case, {"arms": {}})
    c.update(params)
    failures = []
    if scenario == "b":
        cap = read_json(os.path.join(arm_dir, "b.capacity.json"))
        if cap and cap.get("state") == "done" and not cap.get("reused"):
            c["capacity"] = cap["models"]
            c["capacity_measured"] = {"date": meta.get("date"), "gpu": meta.get("gpu")}
    for fn in sorted(os.listdir(arm_dir)):
        if not fn.startswith(scenario + ".") or not fn.endswith(".json") or fn == "b.capacity.json":
            continue
        arm = fn[len(scenario) + 1:-len(".json")]
        res = read_json(os.path.join(arm_dir, fn), {})
        e = arm_entry(scenario, res, meta, command, notes.get(arm, ""))
        old = c["arms"].get(arm)
        # A failed rerun must not wipe an earlier good measurement of the same arm.
        if e["ok"] or not (old and old.get("ok")):
            c["arms"][arm] = e
        else:
            failures.append({"arm": arm, "date": meta.get("date"), "note": e["note"]})
    if failures:
        c.setdefault("failed_reruns", []).extend(failures)
    derive(results)
    return c


def merge_into(dst, src):
    """Merges results file `src` into `dst`, arm by arm; a newer ok arm wins."""
    for scen, cases in (src.get("scenarios") or {}).items():
        for case, c in cases.items():
            d = dst.setdefault("scenarios", {}).setdefault(scen, {}).setdefault(case, {"arms": {}})
            for k, v in c.items():
                if k not in ("arms", "derived", "target"):
                    if k == "capacity" and "capacity" in d and (c.get("capacity_measured") or {}).get("date", "") < \
                            (d.get("capacity_measured") or {}).get("date", ""):
                        continue
                    d[k] = copy.deepcopy(v)
            for arm, e in (c.get("arms") or {}).items():
                old = d["arms"].get(arm)
                newer = (e.get("date") or "") >= ((old or {}).get("date") or "")
                if old is None or (e.get("ok") and (newer or not old.get("ok"))):
                    d["arms"][arm] = copy.deepcopy(e)
    derive(dst)
    return dst


# ---------------------------------------------------------------- ratios and targets


def derive(results):
    for case, c in (results.get("scenarios", {}).get("a") or {}).items():
        derive_a(c)
    for case, c in (results.get("scenarios", {}).get("b") or {}).items():
        derive_b(c)


def other_rate(lat, alone_lat):
    """Whether a latency entry was offered another rate (more than 5% off) than the alone run:
    an arm stored from an earlier invocation whose alone run measured another capacity."""
    return bool(lat.get("rate") and alone_lat.get("rate") and abs(lat["rate"] / alone_lat["rate"] - 1) > 0.05)


def derive_a(c):
    arms = c.get("arms", {})
    alone_lat = ((arms.get("alone_lat") or {}).get("tenants") or {}).get("lat") or {}
    alone_be = ((arms.get("alone_be") or {}).get("tenants") or {}).get("be") or {}
    for arm, e in arms.items():
        lat = (e.get("tenants") or {}).get("lat")
        be = (e.get("tenants") or {}).get("be")
        if lat is not None:
            lat["p99_vs_alone"] = ratio(lat.get("p99_ms"), alone_lat.get("p99_ms"))
            lat["p50_vs_alone"] = ratio(lat.get("p50_ms"), alone_lat.get("p50_ms"))
        if be is not None:
            be["throughput_vs_alone"] = ratio(be.get("throughput"), alone_be.get("throughput"))
        gpus = {x.get("gpu") for x in (e, arms.get("alone_lat") or {}, arms.get("alone_be") or {}) if x.get("gpu")}
        e["alone_on_other_gpu"] = len(gpus) > 1
    t = dict(TARGET_A)
    pe = arms.get(t["arm"]) or {}
    lat = (pe.get("tenants") or {}).get("lat") or {}
    be = (pe.get("tenants") or {}).get("be") or {}
    r, s = lat.get("p99_vs_alone"), be.get("throughput_vs_alone")
    t["p99_vs_alone"], t["be_throughput_vs_alone"] = r, s
    if other_rate(lat, alone_lat):
        r = None  # the ratio to an alone run at another rate means nothing
    t["met"] = None if r is None or s is None else bool(
        r <= t["max_p99_ratio"] and s >= t["min_be_share"] and pe.get("ok") and not lat.get("p99_is_lower_bound"))
    c["target"] = t


def smallest_model(c):
    cap = c.get("capacity") or {}
    if cap:
        return max(cap, key=lambda m: cap[m].get("capacity_rps") or 0)
    models = c.get("models") or []
    return models[0] if models else None


def p99_at(c, arm, load, model):
    e = (((c.get("arms") or {}).get(arm) or {}).get("loads") or {}).get(load) or {}
    t = (e.get("tenants") or {}).get(model) or {}
    return t.get("p99_ms"), bool(t.get("p99_is_lower_bound"))


def loads_of(c):
    ls = set()
    for e in (c.get("arms") or {}).values():
        ls.update((e.get("loads") or {}).keys())
    return sorted(ls, key=float)


def derive_b(c):
    t = dict(TARGET_B)
    small = smallest_model(c)
    t["smallest_model"] = small
    loads = loads_of(c)
    base, arm, lim = t["baseline"], t["arm"], t["p99_limit_ms"]

    def ok_load(load, models):
        vals = [p99_at(c, base, load, m) for m in models]
        return all(v is not None and v < lim and not lb for v, lb in vals)

    models = sorted({m for e in (c.get("arms") or {}).values() for l in (e.get("loads") or {}).values()
                     for m in (l.get("tenants") or {})})
    for key, ms in (("", [small]), ("_all_models", models)):
        good = [l for l in loads if small and ok_load(l, ms)]
        star = good[-1] if good else None
        t["load" + key] = float(star) if star else None
        if star:
            b, _ = p99_at(c, base, star, small)
            s, slb = p99_at(c, arm, star, small)
            t["mps_p99_ms" + key], t["srpt_p99_ms" + key] = b, s
            t["gain" + key] = ratio(b, s) if not slb else None
            t["met" + key] = None if t["gain" + key] is None else t["gain" + key] >= t["min_gain"]
        else:
            t["met" + key] = None
    t["rule"] = (f"highest offered load at which {base}'s p99 for the smallest model ({small}) stays under "
                 f"{lim:g} ms; there {arm}'s p99 for that model must be at least {t['min_gain']:g}x lower. "
                 f"The _all_models variant asks {base} to keep every model's p99 under {lim:g} ms.")
    c["target"] = t


# ---------------------------------------------------------------- Markdown


def md_a(case, c):
    arms = c.get("arms", {})
    lat_model, be_work = case.split("+", 1) if "+" in case else (case, "")
    out = [f"### Scenario a: `{lat_model}` (batch 1, Poisson at 50% of its capacity alone) beside `{be_work}`", ""]
    al = ((arms.get("alone_lat") or {}).get("tenants") or {}).get("lat") or {}
    if al.get("capacity_rps"):
        out.append(f"Latency tenant alone: {fmt(al['capacity_rps'], 1)} requests/s closed-loop "
                   f"({fmt(al.get('service_ms'), 3)} ms each); offered {fmt(al.get('rate'), 1)} requests/s.")
        out.append("")
    out += ["| arm | lat p50 ms | lat p99 ms | p99 / alone | lat req/s | best-effort throughput | "
            "best-effort / alone | note |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for arm in arm_sort(arms):
        e = arms[arm]
        lat = (e.get("tenants") or {}).get("lat") or {}
        be = (e.get("tenants") or {}).get("be") or {}
        p99 = fmt(lat.get("p99_ms")) + (" (lower bound)" if lat.get("p99_is_lower_bound") else "")
        thr = "-" if be.get("throughput") is None else f"{fmt(be['throughput'], 1)} {be.get('unit', '')}"
        if be.get("tflops") is not None:
            thr += f" ({fmt(be['tflops'], 0)} TFLOP/s)"
        notes = [x for x in (("" if e.get("ok") else "FAILED"), e.get("note"),
                             "alone measured on another GPU" if e.get("alone_on_other_gpu") else "") if x]
        if lat.get("censored"):
            notes.append(f"{lat['censored']} of {lat.get('n')} requests unfinished at the drain limit")
        if other_rate(lat, al):
            notes.append(f"offered {fmt(lat['rate'], 1)} requests/s, not {fmt(al['rate'], 1)} (an earlier run):"
                         " compare with the arms of its own run only")
        out.append(f"| {ARM_LABEL.get(arm, arm)} | {fmt(lat.get('p50_ms'))} | {p99} | "
                   f"{fmt(lat.get('p99_vs_alone'))}{'x' if lat.get('p99_vs_alone') is not None else ''} | "
                   f"{fmt(lat.get('throughput'), 1)} | {thr} | "
                   f"{fmt(be.get('throughput_vs_alone'))}{'x' if be.get('throughput_vs_alone') is not None else ''} | "
                   f"{'; '.join(notes)} |")
    t = c.get("target") or {}
    verdict = {True: "**met**", False: "**not met**", None: "not measurable (arm or alone missing)"}[t.get("met")]
    out += ["", f"Target: under Baton priority, p99 <= {t.get('max_p99_ratio')}x alone and best-effort >= "
            f"{int(100 * t.get('min_be_share', 0))}% of alone: p99 {fmt(t.get('p99_vs_alone'))}x, best-effort "
            f"{fmt(t.get('be_throughput_vs_alone'))}x: {verdict}.", ""]
    return out


def md_b(case, c):
    t = c.get("target") or {}
    small = t.get("smallest_model")
    models = c.get("models") or sorted((c.get("capacity") or {}).keys())
    workers = c.get("workers") or 1
    served = f", {workers} worker processes per model" if workers > 1 else ""
    out = [f"### Scenario b: {len(models)} models, lognormal inter-arrivals, sigma {c.get('sigma', case)}{served}",
           ""]
    cap = c.get("capacity") or {}
    if cap:
        out.append("Capacity alone (closed loop, native): " + ", ".join(
            f"`{m}` {fmt(cap[m]['capacity_rps'], 1)} req/s ({fmt(cap[m]['service_ms'], 3)} ms)" for m in cap) + ".")
        out.append("Offered load L: each model gets L x (its capacity alone) / (number of models) requests/s."
                   + (f" Each model's requests are dealt round-robin to {workers} processes serving it, each"
                      " one request at a time; capacity alone is one such process's." if workers > 1 else ""))
        out.append("")
    arms = [a for a in arm_sort(c.get("arms", {}))]
    loads = loads_of(c)
    reps = {a: c["arms"][a].get("repeats") or 1 for a in arms}
    if any(r > 1 for r in reps.values()):
        out += ["Runs: " + ", ".join(f"{ARM_LABEL.get(a, a)} {r}" for a, r in reps.items())
                + ". Where an arm ran more than once, each figure is the median over its runs (the runs took"
                " turns between arms; every run's p99 is in the JSON as `p99_ms_runs`).", ""]
    out += [f"p99 (ms) of the smallest model (`{small}`) against offered load:", "",
            "| load | " + " | ".join(ARM_LABEL.get(a, a) for a in arms) + " |",
            "|---:|" + "---:|" * len(arms)]
    for l in loads:
        cells = []
        for a in arms:
            v, lb = p99_at(c, a, l, small)
            cells.append(fmt(v) + (" (>=)" if lb else ""))
        out.append(f"| {l} | " + " | ".join(cells) + " |")
    out += ["", "Every model, p50 / p99 ms (throughput req/s):", "",
            "| arm | load | " + " | ".join(f"`{m}`" for m in models) + " |", "|---|---:|" + "---|" * len(models)]
    for a in arms:
        for l in loads:
            ts = (((c["arms"][a].get("loads") or {}).get(l) or {}).get("tenants") or {})
            cells = []
            for m in models:
                x = ts.get(m) or {}
                cells.append(f"{fmt(x.get('p50_ms'))} / {fmt(x.get('p99_ms'))}"
                             f"{' (>=)' if x.get('p99_is_lower_bound') else ''} ({fmt(x.get('throughput'), 1)})")
            out.append(f"| {ARM_LABEL.get(a, a)} | {l} | " + " | ".join(cells) + " |")
    notes = [f"- {ARM_LABEL.get(a, a)}: {'ok' if c['arms'][a].get('ok') else 'FAILED'}"
             f"{'; ' + c['arms'][a]['note'] if c['arms'][a].get('note') else ''}" for a in arms]
    out += [""] + notes + [""]
    verdict = {True: "**met**", False: "**not met**", None: "not measurable"}
    out.append(f"Target ({t.get('rule', '')}): load {fmt(t.get('load'))}, MPS p99 {fmt(t.get('mps_p99_ms'))} ms, "
               f"srpt p99 {fmt(t.get('srpt_p99_ms'))} ms, gain {fmt(t.get('gain'))}x: {verdict[t.get('met')]}. "
               f"All-models variant: load {fmt(t.get('load_all_models'))}, gain {fmt(t.get('gain_all_models'))}x: "
               f"{verdict[t.get('met_all_models')]}.")
    out.append("")
    return out


def write_md(results, path, pngs):
    sc = results.get("scenarios", {})
    out = ["# Baton multi-tenant benchmark", "",
           "Produced by `bench/multitenant/run.sh` (see bench/README.md, \"Multi-tenant benchmark\"). "
           "Latencies are from each request's scheduled arrival to its completion; p99 marked "
           "\"lower bound\" or \"(>=)\" had more than 1% of requests unfinished at the drain limit "
           "(counted with the time they had waited). Throughput is per second of the measured window.", ""]
    runs = {}
    for scen, cases in sc.items():
        for case, c in cases.items():
            for arm, e in (c.get("arms") or {}).items():
                runs.setdefault((e.get("date"), e.get("gpu"), e.get("commit"), e.get("command")), []).append(
                    f"{scen}/{case}/{arm}")
    out.append("Runs:")
    out.append("")
    for (date, gpu, commit, cmd), what in sorted(runs.items(), key=lambda kv: str(kv[0][0])):
        out.append(f"- {date}, {gpu}, commit {str(commit)[:12]}: `{cmd}` ({', '.join(sorted(what))})")
    out.append("")
    for case in sorted(sc.get("a") or {}):
        out += md_a(case, sc["a"][case])
    for case in sorted(sc.get("b") or {}):
        out += md_b(case, sc["b"][case])
    for p, legend in pngs:
        out.append(f"![{os.path.basename(p)}]({os.path.basename(p)})")
        if legend:
            out += ["", legend]
        out.append("")
    with open(path, "w") as f:
        f.write("\n".join(out).rstrip() + "\n")


# ---------------------------------------------------------------- plots


def points_a(c):
    pts = []
    for arm in arm_sort(c.get("arms", {})):
        if arm.startswith("alone"):
            continue
        t = c["arms"][arm].get("tenants") or {}
        x = (t.get("be") or {}).get("throughput_vs_alone")
        y = (t.get("lat") or {}).get("p99_vs_alone")
        if x is not None and y is not None:
            pts.append((arm, x, y))
    return pts


def series_b(c):
    small = (c.get("target") or {}).get("smallest_model")
    out = []
    for arm in arm_sort(c.get("arms", {})):
        pts = [(float(l), p99_at(c, arm, l, small)[0]) for l in loads_of(c)]
        pts = [(x, y) for x, y in pts if y is not None]
        if pts:
            out.append((arm, pts))
    return out


def plot_mpl(results, png_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    sc = results.get("scenarios", {})
    a = sc.get("a") or {}
    if a:
        fig, axes = plt.subplots(1, len(a), figsize=(6 * len(a), 4.8), squeeze=False)
        for ax, case in zip(axes[0], sorted(a)):
            ax.fill_between([TARGET_A["min_be_share"], 1.5], 0.1, TARGET_A["max_p99_ratio"], color="green",
                            alpha=0.08, label="target")
            for arm, x, y in points_a(a[case]):
                ax.scatter([x], [y], s=40)
                ax.annotate(ARM_LABEL.get(arm, arm), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
            ax.set_yscale("log")
            ax.set_xlim(0, 1.2)
            ax.set_ylim(0.5, None)
            ax.axhline(1.0, color="grey", lw=0.5)
            ax.set_xlabel("best-effort throughput / alone")
            ax.set_ylabel("latency tenant p99 / alone")
            ax.set_title(f"scenario a: {case}")
        fig.tight_layout()
        p = os.path.join(png_dir, "multitenant_a.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        files.append((p, ""))
    b = sc.get("b") or {}
    if b:
        fig, axes = plt.subplots(1, len(b), figsize=(6 * len(b), 4.8), squeeze=False)
        for ax, case in zip(axes[0], sorted(b)):
            for arm, pts in series_b(b[case]):
                ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=ARM_LABEL.get(arm, arm))
            ax.axhline(TARGET_B["p99_limit_ms"], color="grey", ls="--", lw=0.8)
            ax.set_yscale("log")
            ax.set_xlabel("offered load (fraction of serialized capacity)")
            ax.set_ylabel(f"p99 ms, {(b[case].get('target') or {}).get('smallest_model')}")
            ax.set_title(f"scenario b: {case}")
            ax.legend(fontsize=8)
        fig.tight_layout()
        p = os.path.join(png_dir, "multitenant_b.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        files.append((p, ""))
    return files


def plot_plain(results, png_dir):
    import pngplot as pp

    files = []
    sc = results.get("scenarios", {})
    colour = {arm: i for i, arm in enumerate(ARM_ORDER)}
    name = lambda arm: pp.COLOUR_NAMES[colour.get(arm, 7) % len(pp.COLOUR_NAMES)]
    rgb = lambda arm: pp.PALETTE[colour.get(arm, 7) % len(pp.PALETTE)]
    W, H = 480, 360
    for scen in ("a", "b"):
        cases = sorted(sc.get(scen) or {})
        if not cases:
            continue
        cv = pp.Canvas(W * len(cases), H)
        legend = set()
        for i, case in enumerate(cases):
            box = (i * W + 50, 20, i * W + W - 20, H - 40)
            c = sc[scen][case]
            if scen == "a":
                pts = points_a(c)
                ys = [y for _, _, y in pts] + [TARGET_A["max_p99_ratio"], 1.0]
                ylim = (min(0.5, min(ys)), max(ys) * 1.5)
                panel = pp.Panel(cv, box, (0.0, 1.2), ylim, logy=True)
                tx0, ty0 = panel.map(TARGET_A["min_be_share"], TARGET_A["max_p99_ratio"])
                tx1, ty1 = panel.map(1.2, ylim[0])
                cv.rect(tx0, ty0, tx1, ty1, (225, 245, 225))
                panel.frame([0.2 * k for k in range(7)], pp.log_ticks(*ylim))
                for arm, x, y in pts:
                    panel.series([(x, y)], rgb(arm), lines=False)
                    legend.add(arm)
            else:
                ser = series_b(c)
                ys = [y for _, pts in ser for _, y in pts] + [TARGET_B["p99_limit_ms"]]
                xs = [x for _, pts in ser for x, _ in pts] or [0, 1]
                ylim = (max(min(ys) / 2, 1e-3), max(ys) * 2)
                panel = pp.Panel(cv, box, (0.0, max(xs) * 1.1), ylim, logy=True)
                panel.frame([x for x in xs], pp.log_ticks(*ylim))
                x0, y = panel.map(0.0, TARGET_B["p99_limit_ms"])
                cv.dashed(x0, y, box[2], y, (90, 90, 90))
                for arm, pts in ser:
                    panel.series(pts, rgb(arm))
                    legend.add(arm)
        p = os.path.join(png_dir, f"multitenant_{scen}.png")
        with open(p, "wb") as f:
            f.write(cv.png())
        what = ("x: best-effort throughput / alone (0 to 1.2), y: latency p99 / alone (log); shaded: target"
                if scen == "a" else "x: offered load, y: smallest model's p99 ms (log); dashed: 100 ms")
        files.append((p, f"Plain plot (matplotlib was not available), panels left to right: {', '.join(cases)}; "
                         f"{what}; colours: " + ", ".join(f"{name(a)} = {ARM_LABEL.get(a, a)}" for a in arm_sort(legend))
                         + "."))
    return files


def plots(results, png_dir):
    try:
        return plot_mpl(results, png_dir)
    except ImportError:
        return plot_plain(results, png_dir)


# ---------------------------------------------------------------- text table for the terminal


def table(results, scenario, case):
    c = results["scenarios"][scenario][case]
    lines = [f"== multi-tenant benchmark, scenario {scenario}, {case}"]
    if scenario == "a":
        lines.append(f"{'arm':<22}{'p50 ms':>10}{'p99 ms':>11}{'p99/alone':>11}{'BE thr':>12}{'BE/alone':>10}")
        for arm in arm_sort(c["arms"]):
            t = c["arms"][arm].get("tenants") or {}
            lat, be = t.get("lat") or {}, t.get("be") or {}
            lines.append(f"{arm:<22}{fmt(lat.get('p50_ms')):>10}{fmt(lat.get('p99_ms')):>11}"
                         f"{fmt(lat.get('p99_vs_alone')):>11}{fmt(be.get('throughput'), 1):>12}"
                         f"{fmt(be.get('throughput_vs_alone')):>10}" + ("" if c["arms"][arm].get("ok") else "  FAILED"))
        t = c.get("target") or {}
        lines.append(f"target (priority: p99 <= 1.5x alone, BE >= 70%): {t.get('met')}")
    else:
        t = c.get("target") or {}
        small = t.get("smallest_model")
        arms = arm_sort(c["arms"])
        lines.append(f"p99 ms of {small}:")
        lines.append(f"{'load':>6}" + "".join(f"{a[:16]:>18}" for a in arms))
        for l in loads_of(c):
            lines.append(f"{l:>6}" + "".join(f"{fmt(p99_at(c, a, l, small)[0]):>18}" for a in arms))
        lines.append(f"target (srpt >= 2x lower than MPS at MPS's highest load under 100 ms): load {t.get('load')}, "
                     f"gain {t.get('gain')}, met {t.get('met')}")
    return "\n".join(lines)


def render(results, md, png_dir):
    derive(results)
    files = []
    if png_dir:
        os.makedirs(png_dir, exist_ok=True)
        try:
            files = plots(results, png_dir)
        except Exception as e:  # a broken plot must not lose the numbers
            print(f"plots skipped: {e!r}", file=sys.stderr)
    if md:
        write_md(results, md, files)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("update")
    q.add_argument("--results", required=True)
    q.add_argument("--scenario", choices=["a", "b"], required=True)
    q.add_argument("--case", required=True)
    q.add_argument("--arm-dir", required=True)
    q.add_argument("--meta", required=True)
    q.add_argument("--command", default="")
    q.add_argument("--note", action="append", default=[])
    q.add_argument("--md", default="")
    q.add_argument("--png-dir", default="")
    q = sub.add_parser("merge")
    q.add_argument("--results", required=True)
    q.add_argument("--md", default="")
    q.add_argument("--png-dir", default="")
    q.add_argument("inputs", nargs="+")
    q = sub.add_parser("render")
    q.add_argument("--results", required=True)
    q.add_argument("--md", default="")
    q.add_argument("--png-dir", default="")
    q = sub.add_parser("rate")
    q.add_argument("--results", required=True)
    q.add_argument("--case", required=True)
    q = sub.add_parser("capacity")
    q.add_argument("--results", required=True)
    q.add_argument("--case", required=True)
    q.add_argument("--models", required=True)
    q.add_argument("--out", required=True)
    a = p.parse_args(argv)

    if a.cmd == "capacity":
        r = read_json(a.results, {}) or {}
        e = ((r.get("scenarios") or {}).get("b") or {}).get(a.case) or {}
        if not e.get("capacity"):
            print(f"no stored capacity for scenario b, case {a.case}, in {a.results}", file=sys.stderr)
            return 1
        missing = [m for m in a.models.split(",") if m not in e["capacity"]]
        if missing:
            print(f"the stored capacity of case {a.case} has no {', '.join(missing)}", file=sys.stderr)
            return 1
        write_json(a.out, {"state": "done", "models": e["capacity"], "reused": True,
                           "measured": e.get("capacity_measured")})
        return 0

    if a.cmd == "rate":
        r = read_json(a.results, {}) or {}
        e = ((r.get("scenarios") or {}).get("a") or {}).get(a.case) or {}
        lat = (((e.get("arms") or {}).get("alone_lat") or {}).get("tenants") or {}).get("lat") or {}
        if not lat.get("rate"):
            return 1
        print(repr(lat["rate"]))
        return 0
    results = read_json(a.results, None) or {"scenarios": {}}
    if a.cmd == "update":
        meta = read_json(a.meta, {}) or {}
        notes = dict(n.split("=", 1) for n in a.note if "=" in n)
        # Notes that only say the arm went fine add nothing to the table.
        notes = {k: ("" if v == "ok" else v[4:] if v.startswith("ok; ") else v) for k, v in notes.items()}
        params = {}
        if a.scenario == "a" and "+" in a.case:
            params = dict(zip(("lat_model", "be_work"), a.case.split("+", 1)))
        if a.scenario == "b":
            cap = read_json(os.path.join(a.arm_dir, "b.capacity.json")) or {}
            sigma, _, workers = a.case[len("sigma"):].partition("-w")
            params = {"sigma": float(sigma) if a.case.startswith("sigma") else None,
                      "workers": int(workers) if workers else 1,
                      "models": list((cap.get("models") or {}).keys())}
        update(results, a.scenario, a.case, a.arm_dir, meta, a.command, notes, params)
    elif a.cmd == "merge":
        for f in a.inputs:
            src = read_json(f)
            if src is None:
                print(f"cannot read {f}", file=sys.stderr)
                return 1
            merge_into(results, src)
    derive(results)
    os.makedirs(os.path.dirname(os.path.abspath(a.results)), exist_ok=True)
    write_json(a.results, results)
    render(results, a.md, a.png_dir)
    if a.cmd == "update":
        print(table(results, a.scenario, a.case))
    else:
        for scen, cases in results.get("scenarios", {}).items():
            for case in sorted(cases):
                print(table(results, scen, case))
    return 0


if __name__ == "__main__":
    sys.exit(main())
