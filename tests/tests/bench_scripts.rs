//! The benchmarks' own tests, run here so that a change to a benchmark cannot land untested:
//! the multi-tenant benchmark's (`bench/multitenant/test_local.py`: its arrival streams, queue
//! accounting, worker merging and report, with tenants that sleep instead of using a GPU) and
//! the scale benchmark's (`bench/scale/test_local.py`: its percentiles, medians over repeats,
//! ratios and report, without a daemon).

use std::path::Path;
use std::process::Command;

/// Runs `test_local.py` of the benchmark in `bench/<name>` with python3's unittest; passes
/// without checking anything where python3 cannot be run.
fn bench_unittests(name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../bench")
        .join(name);
    let out = match Command::new("python3")
        .args(["-m", "unittest", "-q", "test_local"])
        .current_dir(&dir)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("skipped: python3 is not runnable here ({e})");
            return;
        }
    };
    assert!(
        out.status.success(),
        "bench/{name}/test_local.py failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn multitenant_bench_scripts() {
    bench_unittests("multitenant");
}

#[test]
fn scale_bench_scripts() {
    bench_unittests("scale");
}
