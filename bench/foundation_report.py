#!/usr/bin/env python3
"""Merges bench_foundation outputs (one JSON object per line) of the native,
Baton and MPS runs into bench/results/foundation.json and foundation.md.

  foundation_report.py merge --native F --baton F --mps F --json OUT.json
      --md OUT.md --meta META.json --command CMD [--note MODE=TEXT ...]
  foundation_report.py table FOUNDATION.json
"""
import argparse
import json
import sys

MODES = ("native", "baton", "mps")


def read_jsonl(path):
    out = {}
    order = []
    if not path:
        return out, order
    try:
        with open(path, errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    r = json.loads(line)
                    m, v, u = r["measure"], float(r["value"]), r["unit"]
                except (ValueError, KeyError, TypeError):
                    continue
                out[m] = (v, u)
                order.append(m)
    except OSError:
        pass
    return out, order


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "us":
        return f"{v:.2f}" if v < 1000 else f"{v:.0f}"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}"


def rows_of(results):
    rows = [("measure", "unit", "native", "baton", "mps", "baton/native")]
    for r in results:
        ratio = r["baton_over_native"]
        rows.append((r["measure"], r["unit"], fmt(r["native"], r["unit"]),
                     fmt(r["baton"], r["unit"]), fmt(r["mps"], r["unit"]),
                     "-" if ratio is None else f"{ratio:.2f}x"))
    return rows


def text_table(results):
    rows = rows_of(results)
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w[i]) if i >= 2 else c.ljust(w[i])
                       for i, c in enumerate(r)) for r in rows]
    lines.insert(1, "  ".join("-" * x for x in w))
    return "\n".join(lines)


def merge(a):
    data, order = {}, []
    for mode in MODES:
        d, o = read_jsonl(getattr(a, mode))
        data[mode] = d
        order += [m for m in o if m not in order]
    results = []
    for m in order:
        unit = next(data[x][m][1] for x in MODES if m in data[x])
        vals = {x: (data[x][m][0] if m in data[x] else None) for x in MODES}
        ratio = None
        if vals["native"] and vals["baton"] is not None:
            ratio = round(vals["baton"] / vals["native"], 4)
        results.append({"measure": m, "unit": unit, **vals, "baton_over_native": ratio})
    with open(a.json, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")

    meta = {}
    try:
        with open(a.meta) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        pass
    notes = dict(n.split("=", 1) for n in (a.note or []) if "=" in n)
    md = ["# Baton foundation benchmark", "",
          f"- GPU: {meta.get('gpu', 'unknown')}",
          f"- date: {meta.get('date', 'unknown')}",
          f"- commit: {meta.get('commit', 'unknown')}",
          f"- command: `{a.command}`", ""]
    for mode in MODES:
        if mode in notes:
            md.append(f"- {mode}: {notes[mode]}")
    md += ["",
           "Medians. `us`: lower is better; `GB/s`: higher is better. "
           "baton/native is the Baton value divided by the native one "
           "(above 1 means slower for `us`, faster for `GB/s`). "
           "See bench/README.md for what each measure times.", ""]
    rows = rows_of(results)
    md.append("| " + " | ".join(rows[0]) + " |")
    md.append("|" + "|".join(["---"] * 2 + ["---:"] * 4) + "|")
    for r in rows[1:]:
        md.append("| " + " | ".join(r) + " |")
    with open(a.md, "w") as f:
        f.write("\n".join(md) + "\n")
    print(text_table(results))
    return 0 if results else 1


def main(argv):
    if len(argv) == 3 and argv[1] == "table":
        with open(argv[2]) as f:
            print(text_table(json.load(f)))
        return 0
    if len(argv) >= 2 and argv[1] == "merge":
        p = argparse.ArgumentParser(prog="foundation_report.py merge")
        for mode in MODES:
            p.add_argument(f"--{mode}")
        p.add_argument("--json", required=True)
        p.add_argument("--md", required=True)
        p.add_argument("--meta", required=True)
        p.add_argument("--command", required=True)
        p.add_argument("--note", action="append")
        return merge(p.parse_args(argv[2:]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
