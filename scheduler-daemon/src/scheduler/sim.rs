//! A simulated GPU for testing policies without one: deterministic discrete events.
//!
//! The GPU has `slots` execution slots (think SMs). A kernel is `blocks` blocks of
//! `block_time` each; a block holds one slot while it runs. Streams are in order: a kernel
//! starts only after the previous kernel of its stream has completed. Whenever slots are free
//! the block dispatcher starts blocks of the runnable kernels, preferring higher stream priority
//! (when [`Gpu::stream_priorities`] is on), then earlier issue: the hardware's behaviour in
//! broad strokes (blocks are never preempted; priorities only order pending blocks). The
//! scheduler learns of a completion `notify_delay` after it happens (the daemon's poller), and
//! is told the kernel's elapsed time as an event pair would measure it: from the later of its
//! issue and its stream's previous completion, to its completion.
//!
//! Tenants are open-loop request streams (Poisson arrivals, each request one job of kernels
//! submitted at once on the tenant's stream), scripted jobs, or closed-loop saturating loads.
//! Memory, copies and interference between co-running kernels (caches, bandwidth) are not
//! modelled.

use super::priority::stream_priority;
use super::{CostKey, ItemId, Policy, Scheduler, Work, WorkItem, WorkKind};
use crate::config::TenantPolicy;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

/// xorshift64* (Vigna): a small, fast, seeded generator; plenty for arrival times.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Any seed but zero; spread small seeds over the state.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Exponentially distributed with the given mean (Poisson inter-arrival times).
    pub fn exp(&mut self, mean: Duration) -> Duration {
        Duration::from_secs_f64(-self.unit().ln() * mean.as_secs_f64())
    }
}

/// A kernel: `blocks` blocks of `block_time` each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel {
    pub blocks: u32,
    pub block_time: Duration,
}

impl Kernel {
    pub fn new(blocks: u32, block_time_us: u64) -> Kernel {
        Kernel {
            blocks,
            block_time: Duration::from_micros(block_time_us),
        }
    }

    /// Its duration on an otherwise idle GPU.
    pub fn alone(&self, slots: u32) -> Duration {
        self.block_time * self.blocks.div_ceil(slots.max(1))
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Gpu {
    pub slots: u32,
    /// How long after a kernel completes the scheduler hears of it.
    pub notify_delay: Duration,
    /// Streams get [`stream_priority`] of their tenant's class (as the daemon does under
    /// `priority`); otherwise all streams have the same priority.
    pub stream_priorities: bool,
}

impl Default for Gpu {
    fn default() -> Self {
        Gpu {
            slots: 8,
            notify_delay: Duration::from_micros(5),
            stream_priorities: false,
        }
    }
}

/// What a simulated tenant submits.
#[derive(Clone, Debug)]
pub enum Load {
    /// Requests at Poisson arrivals with mean gap `mean_gap`, from `start` on; each request is
    /// a job of `request`'s kernels submitted at once; the tenant synchronises after each.
    Poisson {
        mean_gap: Duration,
        request: Vec<Kernel>,
        start: Duration,
        seed: u64,
    },
    /// Jobs at given times.
    Jobs(Vec<(Duration, Vec<Kernel>)>),
    /// A closed loop keeping `depth` kernels submitted and not yet complete, from `start` on.
    /// `job_per_kernel`: it synchronises after every kernel (each is a job); else never.
    Saturate {
        kernel: Kernel,
        depth: usize,
        job_per_kernel: bool,
        start: Duration,
    },
}

#[derive(Clone, Debug)]
pub struct SimTenant {
    pub policy: TenantPolicy,
    pub load: Load,
}

/// What a tenant got.
#[derive(Clone, Debug, Default)]
pub struct TenantStats {
    /// Per request or job, arrival to completion of its last kernel on the GPU (in completion
    /// order). Requests still unfinished when the run stops are not included.
    pub latencies: Vec<Duration>,
    /// Requests or jobs that arrived.
    pub requests: usize,
    /// Kernels completed within the measured period.
    pub kernels_done: u64,
    /// GPU time used within the measured period: slot-time of its blocks / slots.
    pub gpu_time: Duration,
    /// The longest time one of its ready stream heads waited to be issued (work never issued
    /// counts from its submission to the end of the run).
    pub max_head_wait: Duration,
}

impl TenantStats {
    /// The `p`-quantile (0 < p <= 1) of the latencies, nearest rank.
    pub fn percentile(&self, p: f64) -> Duration {
        let mut v = self.latencies.clone();
        if v.is_empty() {
            return Duration::ZERO;
        }
        v.sort();
        let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }

    pub fn mean_latency(&self) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.iter().sum::<Duration>() / self.latencies.len() as u32
    }

    /// Kernels per second over `period`.
    pub fn throughput(&self, period: Duration) -> f64 {
        self.kernels_done as f64 / period.as_secs_f64()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Arrive { tenant: usize, job: usize },
    Start { tenant: usize },
    Blocks { item: usize, n: u32 },
    Notify { item: usize },
}

struct Item {
    tenant: usize,
    kernel: Kernel,
    request: Option<usize>,
    sched_id: ItemId,
    unstarted: u32,
    running: u32,
    submitted_at: u64,
    issued: bool,
    issued_at: u64,
    seq: u64,
    /// Stream priority it was issued with (lower is higher, as in CUDA).
    prio: i32,
    gpu_time: Duration,
}

struct Request {
    tenant: usize,
    arrival: u64,
    left: usize,
}

/// The greatest stream priority of the simulated device (range `(0, -5)`, as on current GPUs).
const FAST_LANE_PRIORITY: i32 = -5;

fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

struct Run<'a> {
    gpu: Gpu,
    tenants: &'a [SimTenant],
    sched: Scheduler<usize>,
    base: Instant,
    until: u64,
    events: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    next_ev: u64,
    items: Vec<Item>,
    requests: Vec<Request>,
    open_requests: usize,
    /// Per tenant: its one stream's issued, incomplete items, and its last completion.
    streams: Vec<VecDeque<usize>>,
    last_done: Vec<u64>,
    prio: Vec<i32>,
    jobs_submitted: Vec<u64>,
    free: u32,
    next_seq: u64,
    stats: Vec<TenantStats>,
    out: Vec<(WorkItem, usize)>,
}

impl Run<'_> {
    fn at(&self, t: u64) -> Instant {
        self.base + Duration::from_nanos(t)
    }

    fn push(&mut self, t: u64, ev: Ev) {
        self.next_ev += 1;
        self.events.push(Reverse((t, self.next_ev, ev)));
    }

    fn submit(
        &mut self,
        now: u64,
        tenant: usize,
        kernel: Kernel,
        job: u64,
        request: Option<usize>,
    ) {
        let idx = self.items.len();
        let work = Work {
            tenant: tenant as u64,
            stream: 0,
            job,
            kind: WorkKind::Kernel,
            key: Some(CostKey::kernel(
                ns(kernel.block_time),
                [kernel.blocks, 1, 1],
            )),
        };
        let sched_id = self.sched.submit(self.at(now), work, idx);
        self.items.push(Item {
            tenant,
            kernel,
            request,
            sched_id,
            unstarted: kernel.blocks,
            running: 0,
            submitted_at: now,
            issued: false,
            issued_at: 0,
            seq: 0,
            prio: 0,
            gpu_time: Duration::ZERO,
        });
    }

    fn submit_job(&mut self, now: u64, tenant: usize, kernels: &[Kernel]) {
        let job = self.jobs_submitted[tenant];
        self.jobs_submitted[tenant] += 1;
        let r = self.requests.len();
        self.requests.push(Request {
            tenant,
            arrival: now,
            left: kernels.len(),
        });
        self.open_requests += 1;
        self.stats[tenant].requests += 1;
        for &k in kernels {
            self.submit(now, tenant, k, job, Some(r));
        }
    }

    fn refill(&mut self, now: u64, tenant: usize) {
        if let Load::Saturate {
            kernel,
            job_per_kernel,
            ..
        } = self.tenants[tenant].load
        {
            let job = if job_per_kernel {
                self.jobs_submitted[tenant] += 1;
                self.jobs_submitted[tenant]
            } else {
                0
            };
            self.submit(now, tenant, kernel, job, None);
        }
    }

    /// Issues what the policy picks, then starts blocks on free slots.
    fn settle(&mut self, now: u64) {
        self.out.clear();
        let mut out = std::mem::take(&mut self.out);
        self.sched.poll(self.at(now), &mut out);
        for (wi, idx) in out.drain(..) {
            let wait = wi.issued.unwrap_or(wi.ready_at) - wi.ready_at;
            // The daemon puts a fast-lane tenant's work on a stream of the greatest priority.
            let fast = self.sched.fast_lane(wi.tenant);
            let it = &mut self.items[idx];
            it.prio = if fast {
                FAST_LANE_PRIORITY
            } else {
                self.prio[it.tenant]
            };
            it.issued = true;
            it.issued_at = now;
            self.next_seq += 1;
            it.seq = self.next_seq;
            let t = it.tenant;
            let s = &mut self.stats[t];
            s.max_head_wait = s.max_head_wait.max(wait);
            self.streams[t].push_back(idx);
        }
        self.out = out;
        while self.free > 0 {
            let best = (0..self.streams.len())
                .filter_map(|s| {
                    let &f = self.streams[s].front()?;
                    (self.items[f].unstarted > 0).then_some((
                        self.items[f].prio,
                        self.items[f].seq,
                        f,
                    ))
                })
                .min();
            let Some((_, _, f)) = best else {
                break;
            };
            let it = &mut self.items[f];
            let n = self.free.min(it.unstarted);
            it.unstarted -= n;
            it.running += n;
            self.free -= n;
            let t = now + ns(it.kernel.block_time);
            self.push(t, Ev::Blocks { item: f, n });
        }
    }

    fn handle(&mut self, now: u64, ev: Ev) {
        match ev {
            Ev::Arrive { tenant, job } => {
                let kernels = match &self.tenants[tenant].load {
                    Load::Poisson { request, .. } => request.clone(),
                    Load::Jobs(jobs) => jobs[job].1.clone(),
                    Load::Saturate { .. } => Vec::new(),
                };
                self.submit_job(now, tenant, &kernels);
            }
            Ev::Start { tenant } => {
                if let Load::Saturate { depth, .. } = self.tenants[tenant].load {
                    for _ in 0..depth {
                        self.refill(now, tenant);
                    }
                }
            }
            Ev::Blocks { item, n } => {
                self.free += n;
                let it = &mut self.items[item];
                it.running -= n;
                let (tenant, kernel) = (it.tenant, it.kernel);
                if now <= self.until {
                    self.stats[tenant].gpu_time += kernel.block_time * n / self.gpu.slots.max(1);
                }
                if it.unstarted == 0 && it.running == 0 {
                    let front = self.streams[tenant].pop_front();
                    debug_assert_eq!(front, Some(item));
                    let start = it.issued_at.max(self.last_done[tenant]);
                    it.gpu_time = Duration::from_nanos(now - start);
                    self.last_done[tenant] = now;
                    if now <= self.until {
                        self.stats[tenant].kernels_done += 1;
                    }
                    if let Some(r) = it.request {
                        let req = &mut self.requests[r];
                        req.left -= 1;
                        if req.left == 0 {
                            let lat = Duration::from_nanos(now - req.arrival);
                            self.stats[req.tenant].latencies.push(lat);
                            self.open_requests -= 1;
                        }
                    }
                    self.push(now + ns(self.gpu.notify_delay), Ev::Notify { item });
                }
            }
            Ev::Notify { item } => {
                let (id, gpu_time, tenant) = {
                    let it = &self.items[item];
                    (it.sched_id, it.gpu_time, it.tenant)
                };
                self.sched.complete(self.at(now), id, Some(gpu_time));
                self.refill(now, tenant);
            }
        }
    }
}

/// Runs `tenants` on `gpu` under `policy`. Arrivals stop at `until`, which is also the end
/// of the period over which throughput and GPU time are counted; the run goes on (up to
/// `3 * until`) until every request that arrived has finished.
pub fn run(
    gpu: Gpu,
    policy: Box<dyn Policy>,
    tenants: &[SimTenant],
    until: Duration,
) -> Vec<TenantStats> {
    let n = tenants.len();
    let mut r = Run {
        gpu,
        tenants,
        sched: Scheduler::new(policy),
        base: Instant::now(),
        until: ns(until),
        events: BinaryHeap::new(),
        next_ev: 0,
        items: Vec::new(),
        requests: Vec::new(),
        open_requests: 0,
        streams: vec![VecDeque::new(); n],
        last_done: vec![0; n],
        prio: tenants
            .iter()
            .map(|t| {
                if gpu.stream_priorities {
                    stream_priority(t.policy.class, (0, -5))
                } else {
                    0
                }
            })
            .collect(),
        jobs_submitted: vec![0; n],
        free: gpu.slots,
        next_seq: 0,
        stats: vec![TenantStats::default(); n],
        out: Vec::new(),
    };
    for (i, t) in tenants.iter().enumerate() {
        r.sched.add_tenant(i as u64, &t.policy);
        match &t.load {
            Load::Poisson {
                mean_gap,
                start,
                seed,
                ..
            } => {
                let mut rng = Rng::new(*seed);
                let mut at = ns(*start);
                let mut job = 0;
                loop {
                    at += ns(rng.exp(*mean_gap));
                    if at > r.until {
                        break;
                    }
                    r.push(at, Ev::Arrive { tenant: i, job });
                    job += 1;
                }
            }
            Load::Jobs(jobs) => {
                for (job, (at, _)) in jobs.iter().enumerate() {
                    if ns(*at) <= r.until {
                        r.push(ns(*at), Ev::Arrive { tenant: i, job });
                    }
                }
            }
            Load::Saturate { start, .. } => r.push(ns(*start), Ev::Start { tenant: i }),
        }
    }
    r.settle(0);
    let hard_stop = r.until.saturating_mul(3);
    let mut end = 0;
    while let Some(Reverse((t, _, ev))) = r.events.pop() {
        if t > hard_stop || (t > r.until && r.open_requests == 0) {
            break;
        }
        end = t;
        r.handle(t, ev);
        r.settle(t);
    }
    // Work still waiting at the end has waited at least since it was submitted.
    for it in r.items.iter().filter(|i| !i.issued) {
        let s = &mut r.stats[it.tenant];
        let waited = Duration::from_nanos(end.saturating_sub(it.submitted_at));
        s.max_head_wait = s.max_head_wait.max(waited);
    }
    r.stats
}

#[cfg(test)]
mod tests {
    //! The properties each policy promises, on simulated workloads. The numbers quoted in
    //! `docs/scheduling.md` come from these runs (`cargo test -p baton-daemon --lib sim --
    //! --nocapture` prints them).

    use super::super::{fair::Fair, passthrough::Passthrough, priority::Priority, srpt::Srpt};
    use super::*;
    use crate::config::Class;

    const MS: fn(u64) -> Duration = Duration::from_millis;
    const US: fn(u64) -> Duration = Duration::from_micros;
    const WINDOW: Duration = Duration::from_micros(1000);

    fn tenant(class: Class, weight: f64, load: Load) -> SimTenant {
        SimTenant {
            policy: TenantPolicy {
                class,
                weight,
                ..Default::default()
            },
            load,
        }
    }

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1e3
    }

    #[test]
    fn rng_is_deterministic_and_exp_has_its_mean() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let n = 20_000;
        let mean: f64 = (0..n).map(|_| a.exp(US(100)).as_secs_f64()).sum::<f64>() / n as f64;
        assert!((mean * 1e6 - 100.0).abs() < 3.0, "{mean}");
    }

    #[test]
    fn a_kernel_alone_takes_its_waves() {
        let k = Kernel::new(64, 100);
        assert_eq!(k.alone(8), US(800));
        let s = run(
            Gpu::default(),
            Box::new(Passthrough),
            &[tenant(
                Class::NORMAL,
                1.0,
                Load::Jobs(vec![(Duration::ZERO, vec![k, Kernel::new(4, 25)])]),
            )],
            MS(10),
        );
        assert_eq!(s[0].latencies, [US(825)]);
        assert_eq!(s[0].kernels_done, 2);
        assert_eq!(s[0].gpu_time, US(800) + US(25) / 2);
    }

    /// A latency-critical tenant: requests of 20 short kernels (4 blocks of 25 us on 8 slots:
    /// half the GPU, 500 us per request alone) at Poisson arrivals, 50% load.
    fn latency_tenant() -> SimTenant {
        tenant(
            Class::HIGH,
            1.0,
            Load::Poisson {
                mean_gap: US(1000),
                request: vec![Kernel::new(4, 25); 20],
                start: Duration::ZERO,
                seed: 1,
            },
        )
    }

    /// A best-effort tenant: long kernels (64 blocks of 100 us: 800 us) back to back, four
    /// queued at a time.
    fn batch_tenant() -> SimTenant {
        tenant(
            Class::LOW,
            1.0,
            Load::Saturate {
                kernel: Kernel::new(64, 100),
                depth: 4,
                job_per_kernel: false,
                start: Duration::ZERO,
            },
        )
    }

    #[test]
    fn priority_protects_latency_and_keeps_batch_throughput() {
        let until = MS(300);
        let gpu = Gpu {
            stream_priorities: true,
            ..Gpu::default()
        };
        let prio = || Box::new(Priority::new(WINDOW, 0));
        let lc_alone = &run(gpu, prio(), &[latency_tenant()], until)[0];
        let be_alone = &run(gpu, prio(), &[batch_tenant()], until)[0];
        let both = run(gpu, prio(), &[latency_tenant(), batch_tenant()], until);
        let plain = Gpu::default();
        let pass = run(
            plain,
            Box::new(Passthrough),
            &[latency_tenant(), batch_tenant()],
            until,
        );
        // The same throttling without stream priorities: what the daemon would get if it
        // held work back but created every stream alike.
        let flat = run(plain, prio(), &[latency_tenant(), batch_tenant()], until);
        let p99_flat = flat[0].percentile(0.99);
        let (p99_alone, p99) = (lc_alone.percentile(0.99), both[0].percentile(0.99));
        let p99_pass = pass[0].percentile(0.99);
        let be = both[1].throughput(until) / be_alone.throughput(until);
        let be_pass = pass[1].throughput(until) / be_alone.throughput(until);
        eprintln!(
            "priority: latency p99 alone {:.3} ms, with batch {:.3} ms ({:.2}x; passthrough {:.3} ms, {:.2}x); \
             without stream priorities {:.3} ms ({:.2}x); p50 alone {:.3} / with batch {:.3} ms; \
             batch throughput {:.0}/s alone, {:.0}/s = {:.0}% (passthrough {:.0}%); requests {}",
            ms(p99_alone),
            ms(p99),
            p99.as_secs_f64() / p99_alone.as_secs_f64(),
            ms(p99_pass),
            p99_pass.as_secs_f64() / p99_alone.as_secs_f64(),
            ms(p99_flat),
            p99_flat.as_secs_f64() / p99_alone.as_secs_f64(),
            ms(lc_alone.percentile(0.5)),
            ms(both[0].percentile(0.5)),
            be_alone.throughput(until),
            both[1].throughput(until),
            be * 100.0,
            be_pass * 100.0,
            both[0].latencies.len(),
        );
        assert_eq!(both[0].latencies.len(), both[0].requests);
        assert!(both[0].requests > 250);
        assert!(p99.as_secs_f64() <= 1.5 * p99_alone.as_secs_f64());
        assert!(be >= 0.5, "batch got {be:.2} of its alone throughput");
        // The workload is one where it matters: passthrough (MPS-like) does not protect it.
        assert!(p99_pass.as_secs_f64() > 2.0 * p99_alone.as_secs_f64());
    }

    /// A saturating tenant: always has work queued (16 kernels outstanding).
    fn saturating(weight: f64, kernel: Kernel) -> SimTenant {
        tenant(
            Class::NORMAL,
            weight,
            Load::Saturate {
                kernel,
                depth: 16,
                job_per_kernel: false,
                start: Duration::ZERO,
            },
        )
    }

    #[test]
    fn fair_shares_gpu_time_by_weight() {
        let until = MS(400);
        let tenants = [
            saturating(1.0, Kernel::new(16, 400)),
            saturating(3.0, Kernel::new(8, 200)),
        ];
        let s = run(Gpu::default(), Box::new(Fair::new(WINDOW)), &tenants, until);
        let ratio = s[1].gpu_time.as_secs_f64() / s[0].gpu_time.as_secs_f64();
        let busy = (s[0].gpu_time + s[1].gpu_time).as_secs_f64() / until.as_secs_f64();
        let p = run(Gpu::default(), Box::new(Passthrough), &tenants, until);
        let pratio = p[1].gpu_time.as_secs_f64() / p[0].gpu_time.as_secs_f64();
        // Equal weights, and the other way round.
        let eq = run(
            Gpu::default(),
            Box::new(Fair::new(WINDOW)),
            &[
                saturating(1.0, Kernel::new(16, 400)),
                saturating(1.0, Kernel::new(8, 200)),
            ],
            until,
        );
        let eq_ratio = eq[1].gpu_time.as_secs_f64() / eq[0].gpu_time.as_secs_f64();
        let rev = run(
            Gpu::default(),
            Box::new(Fair::new(WINDOW)),
            &[
                saturating(3.0, Kernel::new(16, 400)),
                saturating(1.0, Kernel::new(8, 200)),
            ],
            until,
        );
        let rev_ratio = rev[0].gpu_time.as_secs_f64() / rev[1].gpu_time.as_secs_f64();
        eprintln!(
            "fair: weights 1:3 -> GPU time 1:{ratio:.3} (GPU busy {:.1}%); reversed 3:1 -> {rev_ratio:.3}:1; \
             equal weights -> 1:{eq_ratio:.3}; passthrough -> 1:{pratio:.3}",
            busy * 100.0
        );
        assert!((ratio - 3.0).abs() <= 0.3, "{ratio}");
        assert!((rev_ratio - 3.0).abs() <= 0.3, "{rev_ratio}");
        assert!((eq_ratio - 1.0).abs() <= 0.1, "{eq_ratio}");
        assert!(busy > 0.95, "fair keeps the GPU busy: {busy}");
    }

    /// `n` saturating tenants with weights 1, 2, 3, 4, 1, 2, ... and kernels of five shapes
    /// (from 16 blocks x 400 us to 8 x 30 us, all filling the GPU's slots, so that elapsed and
    /// slot time agree) in another rotation. Returns, per tenant, how far its GPU time is from
    /// its weight's share of the total, as a fraction of that share once one kernel's GPU time
    /// (the granularity of any schedule) is allowed for; and the GPU's busy fraction.
    fn fair_shares(n: usize, until: Duration) -> (Vec<f64>, f64) {
        let shapes = [
            Kernel::new(16, 400),
            Kernel::new(8, 200),
            Kernel::new(8, 100),
            Kernel::new(16, 50),
            Kernel::new(8, 30),
        ];
        let weight = |i: usize| (i % 4 + 1) as f64;
        let kernel = |i: usize| shapes[i % shapes.len()];
        let tenants: Vec<_> = (0..n).map(|i| saturating(weight(i), kernel(i))).collect();
        let s = run(Gpu::default(), Box::new(Fair::new(WINDOW)), &tenants, until);
        let total: f64 = s.iter().map(|t| t.gpu_time.as_secs_f64()).sum();
        let weights: f64 = (0..n).map(weight).sum();
        let off = s
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let want = total * weight(i) / weights;
                let one = kernel(i).alone(8).as_secs_f64();
                ((t.gpu_time.as_secs_f64() - want).abs() - one).max(0.0) / want
            })
            .collect();
        (off, total / until.as_secs_f64())
    }

    #[test]
    fn fair_shares_hold_at_8_and_32_tenants() {
        for (n, until) in [(8, MS(400)), (32, MS(1600))] {
            let (off, busy) = fair_shares(n, until);
            let worst = off.iter().copied().fold(0.0, f64::max);
            eprintln!(
                "fair, {n} tenants (weights 1-4, five kernel shapes): worst share {:.1}% off \
                 its weight's share (past one kernel); GPU busy {:.1}%",
                worst * 100.0,
                busy * 100.0
            );
            assert!(
                worst <= 0.1,
                "{n} tenants: a share is {:.1}% off",
                worst * 100.0
            );
            assert!(busy > 0.95, "{n} tenants: GPU busy {busy}");
        }
    }

    /// Small jobs (5 kernels, 100 us) at 20% load and big jobs (30 kernels of 800 us: 24 ms) at
    /// 60% load.
    fn mixed() -> [SimTenant; 2] {
        [
            tenant(
                Class::NORMAL,
                1.0,
                Load::Poisson {
                    mean_gap: US(500),
                    request: vec![Kernel::new(8, 20); 5],
                    start: Duration::ZERO,
                    seed: 2,
                },
            ),
            tenant(
                Class::NORMAL,
                1.0,
                Load::Poisson {
                    mean_gap: MS(40),
                    request: vec![Kernel::new(16, 400); 30],
                    start: Duration::ZERO,
                    seed: 3,
                },
            ),
        ]
    }

    #[test]
    fn srpt_cuts_small_job_latency() {
        let until = MS(600);
        let all = |x: &[TenantStats]| {
            let v: Vec<Duration> = x.iter().flat_map(|t| t.latencies.iter().copied()).collect();
            v.iter().sum::<Duration>() / v.len() as u32
        };
        let p = run(Gpu::default(), Box::new(Passthrough), &mixed(), until);
        let mut line = format!(
            "srpt on mixed jobs ({} small, {} big): passthrough: small mean {:.3} ms, p99 {:.3}, big mean {:.1} ms, all mean {:.3} ms;",
            p[0].requests,
            p[1].requests,
            ms(p[0].mean_latency()),
            ms(p[0].percentile(0.99)),
            ms(p[1].mean_latency()),
            ms(all(&p)),
        );
        for f in [0.0, 0.5, 2.0] {
            let s = run(
                Gpu::default(),
                Box::new(Srpt::new(WINDOW, f)),
                &mixed(),
                until,
            );
            line += &format!(
                " srpt f={f}: small mean {:.3} ms, p99 {:.3}, big mean {:.1} ms, all mean {:.3} ms;",
                ms(s[0].mean_latency()),
                ms(s[0].percentile(0.99)),
                ms(s[1].mean_latency()),
                ms(all(&s)),
            );
            assert_eq!(s[0].latencies.len(), s[0].requests);
            assert_eq!(s[1].latencies.len(), s[1].requests);
            assert!(s[0].mean_latency() * 2 < p[0].mean_latency(), "{line}");
            if f <= 0.5 {
                assert!(s[0].mean_latency() * 10 < p[0].mean_latency(), "{line}");
            }
            assert!(all(&s) < all(&p), "{line}");
        }
        eprintln!("{line}");
    }

    /// Overload in the shape of the H100 benchmark's scenario b: a tiny model beside two larger
    /// ones offering more work than the GPU can do.
    fn overloaded_mix() -> [SimTenant; 3] {
        let poisson = |gap: Duration, request: Vec<Kernel>, seed| {
            tenant(
                Class::NORMAL,
                1.0,
                Load::Poisson {
                    mean_gap: gap,
                    request,
                    start: Duration::ZERO,
                    seed,
                },
            )
        };
        [
            // 4 x 20 us alone: 80 us per request, 8% load.
            poisson(MS(1), vec![Kernel::new(4, 20); 4], 11),
            // 20 x 150 us: 3 ms per request, 50% load.
            poisson(MS(6), vec![Kernel::new(8, 150); 20], 12),
            // 30 x 800 us: 24 ms per request, 80% load.
            poisson(MS(30), vec![Kernel::new(16, 400); 30], 13),
        ]
    }

    #[test]
    fn srpt_short_jobs_keep_their_latency_under_overload() {
        let until = MS(600);
        let tenants = overloaded_mix();
        let alone = run(Gpu::default(), Box::new(Passthrough), &tenants[..1], until);
        let one_window = run(
            Gpu::default(),
            Box::new(Srpt::new(WINDOW, 0.5)),
            &tenants,
            until,
        );
        let lanes = run(
            Gpu::default(),
            Box::new(Srpt::new(WINDOW, 0.5).with_short_jobs(Some(WINDOW))),
            &tenants,
            until,
        );
        let p99 = |s: &[TenantStats], t: usize| ms(s[t].percentile(0.99));
        let line = format!(
            "srpt under overload, small p99: alone {:.3} ms, one window {:.3} ms, short-job lane {:.3} ms; \
             medium jobs done {} / {}, big {} / {}; medium p99 {:.1} / {:.1} ms",
            p99(&alone, 0),
            p99(&one_window, 0),
            p99(&lanes, 0),
            one_window[1].latencies.len(),
            lanes[1].latencies.len(),
            one_window[2].latencies.len(),
            lanes[2].latencies.len(),
            p99(&one_window, 1),
            p99(&lanes, 1),
        );
        eprintln!("{line}");
        // The lane: the small tenant waits only for running blocks (at most 400 us here).
        assert!(p99(&lanes, 0) < p99(&alone, 0) + 0.8, "{line}");
        assert!(p99(&lanes, 0) * 2.0 < p99(&one_window, 0), "{line}");
        // ...and the others are not starved by it: they finish about as much.
        assert!(
            lanes[1].latencies.len() + lanes[2].latencies.len()
                >= (one_window[1].latencies.len() + one_window[2].latencies.len()) * 9 / 10,
            "{line}"
        );
    }

    /// Eight tenants in the shape of scenario b with two workers per model: two each of a tiny
    /// (4 x 20 us), small (10 x 8 x 60 us), medium (20 x 8 x 150 us) and large (30 x 16 x
    /// 400 us) model, Poisson requests, `load` times 82% of the GPU in all.
    fn eight_models(load: f64) -> Vec<SimTenant> {
        let models: [(Vec<Kernel>, f64); 4] = [
            (vec![Kernel::new(4, 20); 4], 0.04),
            (vec![Kernel::new(8, 60); 10], 0.10),
            (vec![Kernel::new(8, 150); 20], 0.12),
            (vec![Kernel::new(16, 400); 30], 0.15),
        ];
        (0..8)
            .map(|i| {
                let (request, share) = &models[i / 2];
                let alone: Duration = request.iter().map(|k| k.alone(8)).sum();
                tenant(
                    Class::NORMAL,
                    1.0,
                    Load::Poisson {
                        mean_gap: alone.div_f64(share * load),
                        request: request.clone(),
                        start: Duration::ZERO,
                        seed: 21 + i as u64,
                    },
                )
            })
            .collect()
    }

    /// `srpt_fairness` swept with eight tenants: short work keeps its lead whatever the knob,
    /// and the knob moves the tail between the two largest models (`docs/scheduling.md` has a
    /// wider sweep).
    #[test]
    fn srpt_fairness_sweep_at_eight_tenants() {
        let until = MS(1500);
        let tenants = eight_models(1.0);
        let p = run(Gpu::default(), Box::new(Passthrough), &tenants, until);
        let p99 = |s: &[TenantStats], m: usize| {
            ms(s[2 * m].percentile(0.99).max(s[2 * m + 1].percentile(0.99)))
        };
        let mut line = String::from("srpt sweep, 8 tenants, load 1: passthrough p99 (ms)");
        for m in 0..4 {
            line += &format!(" {:.2}", p99(&p, m));
        }
        let mut large = Vec::new();
        for f in [0.0, 0.5, 1.0, 2.0] {
            let s = run(
                Gpu::default(),
                Box::new(Srpt::new(MS(4), f).with_short_jobs(Some(MS(1)))),
                &tenants,
                until,
            );
            let r: Vec<f64> = (0..4).map(|m| p99(&s, m) / p99(&p, m)).collect();
            line += &format!(
                "; f={f}: {:.2}x {:.2}x {:.2}x {:.2}x",
                r[0], r[1], r[2], r[3]
            );
            assert!(r[0] < 0.1 && r[1] < 0.1, "{line}");
            large.push(r[3]);
        }
        eprintln!("{line}");
        // Aging is what lets the largest jobs through: pure SRPT gives them the worst tail.
        assert!(large[0] > large[1] && large[0] > large[3], "{line}");
    }

    #[test]
    fn srpt_fairness_bounds_starvation() {
        let until = MS(300);
        let big = Kernel::new(16, 400);
        // One big kernel alone first (so its size is known), then a 32 ms job at 10 ms, against
        // a tenant that from 1 ms on keeps more short work ready than the window holds.
        let tenants = [
            tenant(
                Class::NORMAL,
                1.0,
                Load::Saturate {
                    kernel: Kernel::new(8, 100),
                    depth: 32,
                    job_per_kernel: true,
                    start: MS(1),
                },
            ),
            tenant(
                Class::NORMAL,
                1.0,
                Load::Jobs(vec![(Duration::ZERO, vec![big]), (MS(10), vec![big; 40])]),
            ),
        ];
        let mut line = String::from("srpt starvation of a 32 ms job:");
        for f in [0.0, 0.5, 2.0] {
            let s = run(
                Gpu::default(),
                Box::new(Srpt::new(WINDOW, f)),
                &tenants,
                until,
            );
            let done = s[1].latencies.len() == 2;
            line += &format!(
                " f={f}: longest wait {:.1} ms, job {}, small share {:.0}%;",
                ms(s[1].max_head_wait),
                if done {
                    format!("done in {:.1} ms", ms(s[1].latencies[1]))
                } else {
                    "not done".into()
                },
                100.0 * s[0].gpu_time.as_secs_f64() / until.as_secs_f64()
            );
            if f == 0.0 {
                assert!(!done, "pure SRPT starves the big job");
            } else {
                assert!(done);
                // Bound: remaining / f, plus a window's drain.
                let bound = 32.0 / f * 1.15 + 2.0;
                assert!(ms(s[1].max_head_wait) <= bound, "{line}");
                assert!(
                    ms(s[1].latencies[1]) <= 32.0 / f + 32.0 * (1.0 + 1.0 / f) + 5.0,
                    "{line}"
                );
            }
        }
        eprintln!("{line}");
    }
}
