//! How many work items per second the gate lets through when many sessions wait on it, on the
//! CPU alone: N tenant threads each admit one item at a time (as a session thread does), a
//! stand-in GPU finishes every item a fixed time after its issue, and a poller reports
//! completions every 20 us (as the daemon's does).
//!
//!     cargo run --release -p baton-daemon --example gate_throughput -- [TENANTS] [ITEM_US] [POLICY]
//!
//! POLICY: fair (default), srpt or priority. Prints items/s, the mean admit wait, and the gate's
//! counters per item: how often an admission parked, and how many wake-ups it took (one per
//! parked admission when only granted waiters are woken).

use baton_daemon::config::{Config, PolicyKind, TenantPolicy};
use baton_daemon::scheduler::gate::Gate;
use baton_daemon::scheduler::{Work, WorkKind};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tenants: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(8);
    let item = Duration::from_micros(args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20));
    let policy = args.get(3).map(String::as_str).unwrap_or("fair");
    let mut cfg = Config::parse(&format!("[daemon]\npolicy = \"{policy}\"\n"))
        .unwrap_or_else(|e| panic!("{e}"))
        .daemon;
    if cfg.policy == PolicyKind::Srpt {
        cfg.srpt_short_job = None;
    }
    let gate = Arc::new(Gate::from_config(&cfg));
    for t in 0..tenants {
        gate.add_tenant(t, &TenantPolicy::default());
    }
    let gpu: Arc<Mutex<VecDeque<(Instant, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (done, waited) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let poller = {
        let (gate, gpu, stop) = (gate.clone(), gpu.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                let due: Vec<u64> = {
                    let mut q = gpu.lock().unwrap();
                    let mut v = Vec::new();
                    while q.front().is_some_and(|&(at, _)| at <= now) {
                        v.push(q.pop_front().unwrap().1);
                    }
                    v
                };
                for id in due {
                    gate.complete(id, Some(item));
                }
                std::thread::sleep(Duration::from_micros(20));
            }
        })
    };
    let workers: Vec<_> = (0..tenants)
        .map(|t| {
            let (gate, gpu, stop) = (gate.clone(), gpu.clone(), stop.clone());
            let (done, waited) = (done.clone(), waited.clone());
            std::thread::spawn(move || {
                let mut job = 0;
                while !stop.load(Ordering::Relaxed) {
                    job += 1;
                    let w = Work {
                        tenant: t,
                        stream: 1,
                        job: job / 50,
                        kind: WorkKind::Kernel,
                        key: None,
                    };
                    let t0 = Instant::now();
                    let Some(it) = gate.admit(w, &|| stop.load(Ordering::Relaxed)) else {
                        break;
                    };
                    waited.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    gpu.lock()
                        .unwrap()
                        .push_back((Instant::now() + item, it.id));
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let span = Duration::from_secs(2);
    std::thread::sleep(span);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let _ = poller.join();
    let n = done.load(Ordering::Relaxed);
    let c = gate.counters();
    let per = |x: u64| x as f64 / c.admitted.max(1) as f64;
    println!(
        "{policy}: {tenants} tenants, {} us items: {:.0} items/s, mean admit wait {:.1} us; \
         per item: parked {:.2}, woken {:.2}, empty wake-ups {:.3}",
        item.as_micros(),
        n as f64 / span.as_secs_f64(),
        waited.load(Ordering::Relaxed) as f64 / n.max(1) as f64 / 1e3,
        per(c.parked),
        per(c.woken),
        per(c.idle_wakes),
    );
}
