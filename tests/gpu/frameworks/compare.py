"""Compares a check's native and Baton outputs; appends one record to a JSON list.

    python3 compare.py RESULTS.json NAME TOL NATIVE_RC BATON_RC NATIVE.npz BATON.npz DETAIL
"""

import json
import os
import sys

import numpy as np


def max_abs_diff(a_path, b_path):
    a, b = np.load(a_path), np.load(b_path)
    if sorted(a.files) != sorted(b.files):
        return None, f"outputs differ: {sorted(a.files)} vs {sorted(b.files)}"
    worst = 0.0
    for k in a.files:
        x, y = a[k], b[k]
        if x.shape != y.shape:
            return None, f"{k}: shape {x.shape} vs {y.shape}"
        if x.dtype.kind in "biuS" or y.dtype.kind in "biuS":
            if not np.array_equal(x, y):
                return float("inf"), f"{k}: differs"
            continue
        x, y = x.astype(np.float64), y.astype(np.float64)
        if np.isnan(x).any() or np.isnan(y).any():
            if not np.array_equal(np.isnan(x), np.isnan(y)):
                return float("inf"), f"{k}: NaN pattern differs"
            x, y = np.nan_to_num(x), np.nan_to_num(y)
        if x.size:
            worst = max(worst, float(np.max(np.abs(x - y))))
    return worst, ""


def main():
    path, name, tol, n_rc, b_rc, n_npz, b_npz, detail = sys.argv[1:9]
    tol, n_rc, b_rc = float(tol), int(n_rc), int(b_rc)
    native = "pass" if n_rc == 0 and os.path.exists(n_npz) else "fail"
    diff, why = None, ""
    if native == "pass" and b_rc == 0 and os.path.exists(b_npz):
        diff, why = max_abs_diff(n_npz, b_npz)
        baton = "pass" if diff is not None and diff <= tol else "fail"
        if baton == "fail" and not why:
            why = f"max_abs_diff {diff:g} > tolerance {tol:g}"
    else:
        baton = "fail" if b_rc != 0 or not os.path.exists(b_npz) else "not compared"
    if native == "fail":
        baton = "skip" if b_rc != 0 else "pass (native failed)"
    record = {
        "name": name,
        "native": native,
        "baton": baton,
        "max_abs_diff": diff if diff is None or diff != float("inf") else "inf",
        "tolerance": tol,
        "detail": "; ".join(x for x in [why, detail] if x),
    }
    results = json.load(open(path)) if os.path.exists(path) else []
    results = [r for r in results if r["name"] != name] + [record]
    json.dump(results, open(path, "w"), indent=1)
    print(f"{name:32s} native={native:5s} baton={baton:5s} diff={record['max_abs_diff']}  {record['detail'][:150]}")


if __name__ == "__main__":
    main()
