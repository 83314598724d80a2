#!/usr/bin/env python3
"""Result bookkeeping for tests/gpu/run.sh.

  report.py add RECORDS NAME NATIVE BATON DETAIL
      append one record (JSON line) to RECORDS
  report.py digest NATIVE_LOG BATON_LOG
      compare the DIGEST lines of two program logs; prints "same", or
      "differ: ..." / "missing: ..." and exits 1
  report.py finish RECORDS RESULTS_JSON
      write RESULTS_JSON (list of {name, status, native, detail}; status is
      the result under Baton), print the table, exit 1 if anything failed
  report.py table RESULTS_JSON
      print the table again
"""
import json
import sys


def add(records, name, native, baton, detail):
    with open(records, "a") as f:
        f.write(json.dumps({"name": name, "native": native, "baton": baton,
                            "detail": detail}) + "\n")


def read_digest(path):
    out = {}
    try:
        with open(path, errors="replace") as f:
            for line in f:
                parts = line.rstrip("\n").split(" ", 2)
                if len(parts) == 3 and parts[0] == "DIGEST":
                    out[parts[1]] = parts[2]
    except OSError:
        pass
    return out


def digest(native_log, baton_log):
    a, b = read_digest(native_log), read_digest(baton_log)
    if not a:
        print("no DIGEST lines natively")
        return 1
    missing = sorted(set(a) - set(b))
    extra = sorted(set(b) - set(a))
    differ = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    if not (missing or extra or differ):
        print(f"same ({len(a)} keys)")
        return 0
    parts = []
    if differ:
        shown = ", ".join(f"{k}: native {a[k]} baton {b[k]}" for k in differ[:4])
        parts.append(f"differ {len(differ)}/{len(a)}: {shown}")
    if missing:
        parts.append(f"missing under Baton: {', '.join(missing[:6])}")
    if extra:
        parts.append(f"only under Baton: {', '.join(extra[:6])}")
    print("; ".join(parts))
    return 1


def table(results):
    rows = [("name", "native", "baton")]
    rows += [(r["name"], r.get("native", "?"), r["status"]) for r in results]
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * x for x in w))
    print("\n".join(lines))
    n = {s: sum(1 for r in results if r["status"] == s) for s in ("pass", "fail", "skip")}
    nf = sum(1 for r in results if r.get("native") == "fail")
    print(f"baton: {n['pass']} passed, {n['fail']} failed, {n['skip']} skipped; "
          f"native failures: {nf}")


def finish(records, results_path):
    results = []
    with open(records) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                results.append({"name": r["name"], "status": r["baton"],
                                "native": r["native"], "detail": r["detail"]})
    with open(results_path, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    table(results)
    failed = any(r["status"] == "fail" or r["native"] == "fail" for r in results)
    return 1 if failed or not results else 0


def main(argv):
    if len(argv) >= 2 and argv[1] == "add" and len(argv) == 7:
        add(*argv[2:7])
        return 0
    if len(argv) == 4 and argv[1] == "digest":
        return digest(argv[2], argv[3])
    if len(argv) == 4 and argv[1] == "finish":
        return finish(argv[2], argv[3])
    if len(argv) == 3 and argv[1] == "table":
        with open(argv[2]) as f:
            table(json.load(f))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
