"""GPU-free checks of the benchmark's pieces: python3 bench/multitenant/test_local.py"""

import json
import os
import statistics
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402
import driver  # noqa: E402
import report  # noqa: E402
import tenant  # noqa: E402


class Arrivals(unittest.TestCase):
    def test_rates_match(self):
        for kind, sigma in (("poisson", 0), ("lognormal", 1.5), ("lognormal", 2.0)):
            offs = common.arrival_offsets(kind, 200.0, 2000.0, 7, sigma)
            # Heavy-tailed gaps converge slowly: a loose bound still catches a wrong mu.
            tol = 0.02 if kind == "poisson" else 0.15
            self.assertAlmostEqual(len(offs) / 2000.0 / 200.0, 1.0, delta=tol, msg=(kind, sigma))
            self.assertEqual(offs, sorted(offs))
            self.assertTrue(all(0 <= o < 2000.0 for o in offs))

    def test_reproducible(self):
        a = common.arrival_offsets("lognormal", 50, 10, 3, 2.0)
        self.assertEqual(a, common.arrival_offsets("lognormal", 50, 10, 3, 2.0))
        self.assertNotEqual(a, common.arrival_offsets("lognormal", 50, 10, 4, 2.0))
        self.assertNotEqual(common.phase_seed(1, 0), common.phase_seed(1, 1))

    def test_lognormal_burstier(self):
        cv = lambda offs: statistics.pstdev(np := [b - a for a, b in zip(offs, offs[1:])]) / statistics.mean(np)
        self.assertAlmostEqual(cv(common.arrival_offsets("poisson", 100, 500, 1)), 1.0, delta=0.05)
        self.assertGreater(cv(common.arrival_offsets("lognormal", 100, 500, 1, 2.0)), 3.0)


class Stats(unittest.TestCase):
    def test_percentile(self):
        v = list(range(1, 101))
        self.assertEqual(common.percentile(v, 50), 50.5)
        self.assertAlmostEqual(common.percentile(v, 99), 99.01)
        self.assertIsNone(common.percentile([], 50))

    def test_censored_counts(self):
        s = common.latency_summary([0.001] * 95, [0.5] * 5, 10.0, 95)
        self.assertEqual(s["n"], 100)
        self.assertTrue(s["p99_is_lower_bound"])
        self.assertEqual(s["p99_ms"], 500.0)
        self.assertEqual(s["throughput"], 9.5)


class Serve(unittest.TestCase):
    def fake_clock(self, service):
        t = [0.0]
        clock = lambda: t[0]

        def sleep(until):
            t[0] = max(t[0], until)

        def request():
            t[0] += service

        return clock, sleep, request

    def test_latency_counts_own_backlog(self):
        clock, sleep, request = self.fake_clock(0.010)
        svc, stalls = [], []
        lat, cens, done = tenant.serve_phase(request, [0.0, 0.001, 0.002, 0.5], 10.0, clock, sleep, svc, stalls)
        self.assertEqual([round(x, 6) for x in lat], [0.010, 0.019, 0.028, 0.010])
        self.assertEqual(cens, [])
        # Service times leave out the backlog: every request took its own 10 ms.
        self.assertEqual([round(x, 6) for x in svc], [0.010] * 4)
        self.assertEqual(common.service_summary(svc)["service_p99_ms"], 10.0)
        self.assertEqual(stalls, [0.0] * 4)

    def test_stall_is_time_not_serving(self):
        # The process oversleeps by 5 ms before the second request: a stall, not service.
        clock, sleep, request = self.fake_clock(0.010)

        def late_sleep(until):
            sleep(until + (0.005 if until == 0.1 else 0.0))

        svc, stalls = [], []
        lat, _, _ = tenant.serve_phase(request, [0.0, 0.1], 10.0, clock, late_sleep, svc, stalls)
        self.assertEqual([round(x, 6) for x in stalls], [0.0, 0.005])
        self.assertEqual([round(x, 6) for x in lat], [0.010, 0.015])
        s = common.service_summary(svc, (), stalls)
        self.assertEqual((s["stall_max_ms"], s["stalls_over_1ms"], s["stall_total_ms"]), (5.0, 1, 5.0))

    def test_censor_after_deadline(self):
        clock, sleep, request = self.fake_clock(1.0)
        lat, cens, done = tenant.serve_phase(request, [0.0, 0.1, 0.2, 0.3], 1.5, clock, sleep)
        self.assertEqual(len(lat), 2)
        self.assertEqual([round(x, 6) for x in cens], [1.3, 1.2])

    def test_workers_merge_as_one_server(self):
        # Two workers' raw samples pooled give the summary one process serving all would give.
        def part(w, lat, svc):
            raw = {"lat": lat, "cens": [], "svc": svc, "sync": svc, "stall": [0.0] * len(lat),
                   "completed": len(lat), "window_s": 1.0}
            return {"state": "done", "model": "m", "pid": w, "worker": w, "late_start_s": 0.01 * w,
                    "phases": [{"rate": 10.0, "offered": len(lat), "raw": raw}]}

        a, b = [0.001, 0.002, 0.003], [0.010, 0.020]
        m = driver.merge_workers([part(0, a, a), part(1, b, b)])
        ph = m["phases"][0]
        self.assertEqual(ph, dict(common.latency_summary(a + b, [], 1.0, 5),
                                  **common.service_summary(a + b, a + b, [0.0] * 5), rate=10.0, offered=5))
        self.assertEqual((m["state"], m["pids"], m["late_start_s"]), ("done", [0, 1], 0.01))
        self.assertEqual(driver.tenant_of("mlp.w1"), "mlp")
        self.assertEqual(driver.merge_workers([part(0, a, a), {"state": "no output"}])["state"], "no output")

    def test_repeats_take_medians(self):
        def run(p99, ok=True):
            ph = {"p99_ms": p99, "n": 10, "p99_is_lower_bound": False, "unit": "requests/s"}
            return {"ok": ok, "note": "", "loads": [1.0], "wall_s": 5.0,
                    "tenants": {"m": {"model": "m", "state": "done", "phases": [ph]}}}

        c = driver.combine_repeats([run(3.0), run(100.0), run(1.0), run(50.0, ok=False)])
        ph = c["tenants"]["m"]["phases"][0]
        # The failed run is left out of the figures; the median of the rest is the middle one.
        self.assertEqual((ph["p99_ms"], ph["p99_ms_runs"], ph["n"]), (3.0, [3.0, 100.0, 1.0], 10))
        self.assertEqual((c["repeats"], c["ok"], c["wall_s"]), (3, False, 20.0))
        self.assertIn("run 4: failed", c["note"])

    def test_md1_half_load(self):
        # M/D/1 at rho 0.5: mean sojourn = S (1 + rho / (2 (1 - rho))) = 1.5 S.
        clock, sleep, request = self.fake_clock(0.002)
        offs = common.arrival_offsets("poisson", 250.0, 400.0, 5)
        lat, _, _ = tenant.serve_phase(request, offs, 1e9, clock, sleep)
        self.assertAlmostEqual(statistics.mean(lat) / 0.002, 1.5, delta=0.05)


def arm_result(scenario, arm, tenants, loads=None):
    r = {"scenario": scenario, "arm": arm, "ok": True, "note": "", "tenants": tenants}
    if loads:
        r.update(loads=loads, sigma=1.5)
    return r


def lat_t(p99, rate=100.0, phases=1):
    ph = {"n": 1000, "censored": 0, "p50_ms": p99 / 3, "p99_ms": p99, "p99_is_lower_bound": False,
          "throughput": rate, "unit": "requests/s", "rate": rate, "offered": 1000}
    return {"role": "lat", "state": "done", "model": "m", "rates": [rate], "phases": [dict(ph) for _ in range(phases)]}


class Report(unittest.TestCase):
    def write(self, d, name, obj):
        with open(os.path.join(d, name), "w") as f:
            json.dump(obj, f)

    def test_a_update_merge_and_target(self):
        with tempfile.TemporaryDirectory() as d:
            arms = os.path.join(d, "arms")
            os.mkdir(arms)
            self.write(arms, "a.alone_lat.json", arm_result("a", "alone_lat", {"lat": lat_t(4.0)}))
            self.write(arms, "a.alone_be.json", arm_result("a", "alone_be", {"be": {"role": "be", "throughput": 100.0, "unit": "GEMMs/s"}}))
            self.write(arms, "a.baton_priority.json", arm_result("a", "baton_priority", {
                "lat": lat_t(5.0), "be": {"role": "be", "throughput": 75.0, "unit": "GEMMs/s"}}))
            meta = os.path.join(d, "meta.json")
            self.write(d, "meta.json", {"gpu": "G", "date": "2026-01-01T00:00:00Z", "commit": "c"})
            res = os.path.join(d, "r.json")
            rc = report.main(["update", "--results", res, "--scenario", "a", "--case", "resnet50+gemm", "--arm-dir", arms,
                              "--meta", meta, "--md", os.path.join(d, "r.md"), "--png-dir", d])
            self.assertEqual(rc, 0)
            r = json.load(open(res))
            t = r["scenarios"]["a"]["resnet50+gemm"]["target"]
            self.assertEqual(t["p99_vs_alone"], 1.25)
            self.assertEqual(t["be_throughput_vs_alone"], 0.75)
            self.assertTrue(t["met"])
            self.assertTrue(os.path.getsize(os.path.join(d, "multitenant_a.png")) > 100)
            # A second invocation adds an arm; a failed rerun keeps the earlier good one.
            arms2 = os.path.join(d, "arms2")
            os.mkdir(arms2)
            self.write(arms2, "a.mps.json", arm_result("a", "mps", {"lat": lat_t(900.0), "be": {"role": "be", "throughput": 99.0}}))
            bad = arm_result("a", "baton_priority", {})
            bad["ok"] = False
            self.write(arms2, "a.baton_priority.json", bad)
            report.main(["update", "--results", res, "--scenario", "a", "--case", "resnet50+gemm", "--arm-dir", arms2,
                         "--meta", meta, "--md", os.path.join(d, "r.md")])
            c = json.load(open(res))["scenarios"]["a"]["resnet50+gemm"]
            self.assertEqual(set(c["arms"]), {"alone_lat", "alone_be", "baton_priority", "mps"})
            self.assertTrue(c["arms"]["baton_priority"]["ok"])
            self.assertEqual(c["arms"]["mps"]["tenants"]["lat"]["p99_vs_alone"], 225.0)
            self.assertEqual(len(c["failed_reruns"]), 1)
            # The stored rate serves later invocations that skip alone_lat.
            self.assertEqual(report.main(["rate", "--results", res, "--case", "resnet50+gemm"]), 0)
            # merge: another results file with a b case.
            other = {"scenarios": {"b": {"sigma2": {"arms": {}, "sigma": 2.0}}}}
            self.write(d, "other.json", other)
            report.main(["merge", "--results", res, "--md", os.path.join(d, "r.md"), os.path.join(d, "other.json")])
            r = json.load(open(res))
            self.assertIn("sigma2", r["scenarios"]["b"])
            self.assertIn("resnet50+gemm", r["scenarios"]["a"])
            # A later alone run at another rate: the stored priority arm no longer compares.
            arms3 = os.path.join(d, "arms3")
            os.mkdir(arms3)
            self.write(arms3, "a.alone_lat.json", arm_result("a", "alone_lat", {"lat": lat_t(4.0, rate=50.0)}))
            report.main(["update", "--results", res, "--scenario", "a", "--case", "resnet50+gemm", "--arm-dir", arms3,
                         "--meta", meta, "--md", os.path.join(d, "r.md")])
            t = json.load(open(res))["scenarios"]["a"]["resnet50+gemm"]["target"]
            self.assertIsNone(t["met"])
            self.assertIn("compare with the arms of its own run only", open(os.path.join(d, "r.md")).read())

    def test_b_target(self):
        c = {"capacity": {"mlp": {"capacity_rps": 5000, "service_ms": 0.2}, "big": {"capacity_rps": 100, "service_ms": 10}},
             "arms": {}}
        def arm(p99s_small, p99s_big):
            return {"ok": True, "loads": {l: {"tenants": {"mlp": {"p99_ms": s}, "big": {"p99_ms": b}}}
                                          for l, s, b in zip(["0.25", "0.5", "0.75", "1"], p99s_small, p99s_big)}}
        c["arms"]["mps"] = arm([5, 20, 80, 400], [50, 120, 300, 900])
        c["arms"]["baton_srpt"] = arm([1, 2, 10, 30], [60, 150, 400, 1000])
        report.derive_b(c)
        t = c["target"]
        self.assertEqual(t["smallest_model"], "mlp")
        self.assertEqual(t["load"], 0.75)
        self.assertEqual(t["gain"], 8.0)
        self.assertTrue(t["met"])
        self.assertEqual(t["load_all_models"], 0.25)
        self.assertEqual(t["gain_all_models"], 5.0)


if __name__ == "__main__":
    unittest.main()
