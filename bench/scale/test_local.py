"""The scale benchmark's own arithmetic, without a daemon: percentiles, medians over repeats,
ratios against N = 1, the report, and reading CPU time from /proc.

    cd bench/scale && python3 -m unittest -q test_local
"""

import os
import tempfile
import unittest
from pathlib import Path

import run


def point(n, cmds, p50, p99, cpu, rep=0):
    return {"tenants": n, "cmds_per_s": cmds, "cmd_p50_us": p50, "cmd_p99_us": p99,
            "round_p50_us": p50 * 9, "round_p99_us": p99 * 9, "daemon_cpu_per_cmd_us": cpu,
            "repeat": rep}


class Arithmetic(unittest.TestCase):
    def test_percentile_is_nearest_rank(self):
        v = list(range(1, 101))
        self.assertEqual(run.percentile(v, 0.5), 50)
        self.assertEqual(run.percentile(v, 0.99), 99)
        self.assertEqual(run.percentile(v, 1.0), 100)
        self.assertEqual(run.percentile([7], 0.99), 7)
        self.assertIsNone(run.percentile([], 0.5))

    def test_summary_takes_medians_and_ratios_against_one_tenant(self):
        pts = [point(1, 100.0, 1.0, 2.0, 0.5, 0), point(1, 300.0, 3.0, 4.0, 1.5, 1),
               point(1, 200.0, 2.0, 3.0, 1.0, 2), point(8, 100.0, 4.0, 9.0, 2.0, 0)]
        rows = run.summarize(pts)
        self.assertEqual([r["tenants"] for r in rows], [1, 8])
        one, eight = rows
        self.assertEqual(one["repeats"], 3)
        self.assertEqual(one["cmds_per_s"], 200.0)
        self.assertEqual(one["cmd_p99_us"], 3.0)
        self.assertEqual(one["cmds_per_s_vs_1"], 1.0)
        self.assertEqual(eight["cmds_per_s_vs_1"], 0.5)
        self.assertEqual(eight["cmd_p99_us_vs_1"], 3.0)
        self.assertEqual(eight["daemon_cpu_per_cmd_us_vs_1"], 2.0)

    def test_no_ratio_without_a_one_tenant_point_or_a_cpu_figure(self):
        rows = run.summarize([point(2, 10.0, 1.0, 1.0, None)])
        self.assertIsNone(rows[0]["cmds_per_s_vs_1"])
        self.assertIsNone(rows[0]["daemon_cpu_per_cmd_us"])

    def test_cpu_seconds_reads_this_process(self):
        busy = 0
        for i in range(2_000_000):
            busy += i
        t = run.cpu_seconds([os.getpid()])
        self.assertGreater(t, 0.0)
        self.assertEqual(run.cpu_seconds([2**31 - 1]), 0.0, "a process that is gone counts 0")

    def test_report_has_a_table_per_series_and_the_idle_figures(self):
        series = {"sim baton fair": run.summarize([point(1, 100.0, 1.0, 2.0, 0.5),
                                                   point(8, 50.0, 2.0, 8.0, 1.0)])}
        idle = {"sim baton fair": [{"clients": 64, "seconds": 10.0, "daemon_cpu_s": 0.02,
                                    "core_percent": 0.2, "tick_s": 0.01}]}
        meta = {"date": "d", "command": "python3 bench/scale/run.py --arms sim", "commit": "c",
                "cpus": 2, "loadavg_before": "1", "loadavg_after": "2", "k": 8,
                "seconds": 3.0, "repeats": 1, "note": "n"}
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "scale.md"
            run.write_md(path, meta, series, idle)
            text = path.read_text()
        self.assertIn("`python3 bench/scale/run.py --arms sim`", text)
        self.assertIn("## sim baton fair", text)
        self.assertIn("| 8 | 50.00 | 0.50 | 2.00 | 2.00 | 8.00 | 4.00 | 1.00 | 2.00 |", text)
        self.assertIn("| sim baton fair | 64 | 10.00 | 0.020 | 0.200 |", text)


if __name__ == "__main__":
    unittest.main()
