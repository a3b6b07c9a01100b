//! Closed-loop query phases: a warm-up, then timed passes, each driven by C workers that
//! pull the next query index from a shared cursor over one keep-alive connection each.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::{post_request, Client};
use crate::validate::{check_search_into, lossy_prefix, ErrorKind, Failure, Hit};

/// A server that refuses every connection for this long, with no successful exchange by
/// any worker meanwhile, is taken for dead and the run is aborted.
const DEAD_AFTER: Duration = Duration::from_secs(2);
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);
const MAX_SAMPLES: usize = 20;
const MAX_DETAIL: usize = 300;
/// Latencies are recorded in microseconds up to this bound (larger ones saturate).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Settings shared by every request of a run.
#[derive(Clone, Debug)]
pub struct Settings {
    pub top_k: u32,
    pub max_id: u64,
    pub request_timeout: Duration,
    pub max_body: usize,
}

/// The warm-up: `count` requests over `bodies` (cycled), untimed and not recorded.
pub struct Warmup {
    pub bodies: Arc<Vec<Bytes>>,
    pub count: usize,
    pub concurrency: usize,
    pub time_limit: Option<Duration>,
}

/// Everything `run_queries` needs. `bodies[q]` is the pre-serialized request of query q;
/// `orders[p]` lists the query indices that pass p sends, in sending order.
pub struct QueryPlan {
    pub addr: SocketAddr,
    pub bodies: Arc<Vec<Bytes>>,
    pub orders: Vec<Vec<u32>>,
    pub concurrency: usize,
    pub pass_time_limit: Option<Duration>,
    pub warmup: Option<Warmup>,
    pub settings: Settings,
}

#[derive(Debug, Default, Serialize)]
pub struct LatencyMs {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct WarmupStats {
    pub sent: u64,
    pub completed: u64,
    pub errors: u64,
    pub elapsed_s: f64,
    pub timed_out: bool,
    pub error_counts: BTreeMap<&'static str, u64>,
}

/// One timed pass. `completed` counts valid responses, `errors` failed requests; `sent`
/// = completed + errors. qps = completed / elapsed, elapsed from the first send to the last
/// completion. Latency covers valid responses only.
#[derive(Debug, Serialize)]
pub struct PassStats {
    pub sent: u64,
    pub completed: u64,
    pub errors: u64,
    pub elapsed_s: f64,
    pub qps: f64,
    pub timed_out: bool,
    pub latency_ms: LatencyMs,
    pub error_counts: BTreeMap<&'static str, u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ErrorSample {
    /// Pass index, or -1 for the warm-up.
    pub pass: i64,
    pub query: u32,
    pub kind: &'static str,
    pub detail: String,
}

/// The stats.json of `loadgen query`. `error_counts` sums the timed passes only; the
/// warm-up keeps its own.
#[derive(Debug, Default, Serialize)]
pub struct QueryStats {
    pub warmup: WarmupStats,
    pub passes: Vec<PassStats>,
    pub error_counts: BTreeMap<&'static str, u64>,
    pub error_samples: Vec<ErrorSample>,
    pub aborted: Option<String>,
}

/// Returned neighbours of every pass, shape (passes, queries, k), indexed by query index:
/// -1 / NaN where nothing was returned; and the latency of every answered query, shape
/// (passes, queries), NaN where the query was not sent or failed.
pub struct Returned {
    pub k: usize,
    pub queries: usize,
    pub ids: Vec<i64>,
    pub dists: Vec<f32>,
    pub latency_ms: Vec<f32>,
}

impl Returned {
    fn new(passes: usize, queries: usize, k: usize) -> Self {
        let n = passes * queries * k;
        Self {
            k,
            queries,
            ids: vec![-1; n],
            dists: vec![f32::NAN; n],
            latency_ms: vec![f32::NAN; passes * queries],
        }
    }

    fn store(&mut self, pass: usize, query: usize, hits: &[Hit], latency_ms: f32) {
        self.latency_ms[pass * self.queries + query] = latency_ms;
        let at = (pass * self.queries + query) * self.k;
        for j in 0..self.k {
            let hit = hits.get(j);
            // Ids past i64::MAX are out of range anyway; saturate rather than wrap negative.
            self.ids[at + j] = hit.map_or(-1, |h| h.id.min(i64::MAX as u64) as i64);
            self.dists[at + j] = hit.and_then(|h| h.distance).map_or(f32::NAN, |d| d as f32);
        }
    }

    /// The ids returned for `query` in `pass`.
    pub fn ids_of(&self, pass: usize, query: usize) -> &[i64] {
        let at = (pass * self.queries + query) * self.k;
        &self.ids[at..at + self.k]
    }
}

/// State shared by all phases of a run: liveness of the server, abort, error samples.
struct RunState {
    epoch: Instant,
    last_alive_ms: AtomicU64,
    aborted: AtomicBool,
    abort_reason: Mutex<Option<String>>,
    samples: Mutex<Vec<ErrorSample>>,
    returned: Mutex<Returned>,
    settings: Settings,
}

impl RunState {
    fn mark_alive(&self) {
        self.mark_alive_at(Instant::now());
    }

    fn mark_alive_at(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.epoch).as_millis() as u64;
        // Millisecond resolution: most calls see no change and write nothing.
        if ms > self.last_alive_ms.load(Ordering::Relaxed) {
            self.last_alive_ms.store(ms, Ordering::Relaxed);
        }
    }

    fn since_alive(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_alive_ms.load(Ordering::Relaxed)))
    }

    fn abort(&self, reason: String) {
        let mut slot = self.abort_reason.lock().unwrap();
        slot.get_or_insert(reason);
        self.aborted.store(true, Ordering::Relaxed);
    }

    fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Relaxed)
    }

    fn sample(&self, pass: i64, query: u32, failure: &Failure) {
        let mut samples = self.samples.lock().unwrap();
        if samples.len() < MAX_SAMPLES {
            let detail: String = failure.detail.chars().take(MAX_DETAIL).collect();
            samples.push(ErrorSample {
                pass,
                query,
                kind: failure.kind.as_str(),
                detail,
            });
        }
    }
}

/// Every request of a phase, whole (request line, headers, body), built before its clock
/// starts: request q is `bytes[offsets[q]..offsets[q + 1]]`. One block, not a vector per
/// request, so that finding a request costs no extra cache miss.
pub struct Requests {
    bytes: Vec<u8>,
    offsets: Vec<usize>,
}

impl Requests {
    fn new(addr: SocketAddr, bodies: &[Bytes]) -> Self {
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(bodies.len() + 1);
        offsets.push(0);
        for body in bodies {
            bytes.extend_from_slice(&post_request(addr, "/search", body));
            offsets.push(bytes.len());
        }
        Self { bytes, offsets }
    }

    fn get(&self, q: usize) -> &[u8] {
        &self.bytes[self.offsets[q]..self.offsets[q + 1]]
    }
}

/// A hint to the CPU to bring the cache line at `at` in; no effect on the program's meaning.
#[inline(always)]
fn prefetch<T>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address, and SSE (which provides it) is
    // part of the x86_64 baseline.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// One phase (the warm-up or a pass) as its workers see it.
struct PhaseCtx {
    run: Arc<RunState>,
    /// Pass index; -1 for the warm-up, which records nothing.
    pass: i64,
    requests: Arc<Requests>,
    /// Addresses of `Returned`'s ids and distances and its (queries, k), only to prefetch.
    returned_at: (usize, usize),
    returned_shape: (usize, usize),
    order: Vec<u32>,
    cursor: AtomicUsize,
    /// Number of workers: how far ahead of its own index a worker prefetches.
    workers: usize,
    deadline: Option<Instant>,
    timed_out: AtomicBool,
    error_counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl PhaseCtx {
    /// Prefetches what the request at position `i` of the order will touch: its request
    /// bytes (the kernel copies them) and its result slots; the offsets for the one after.
    fn prefetch(&self, i: usize) {
        if let Some(&q) = self.order.get(i + self.workers) {
            prefetch(self.requests.offsets.as_ptr().wrapping_add(q as usize));
        }
        let Some(&q) = self.order.get(i) else {
            return;
        };
        let q = q as usize;
        let (start, end) = (self.requests.offsets[q], self.requests.offsets[q + 1]);
        for line in (start..end).step_by(64) {
            prefetch(self.requests.bytes.as_ptr().wrapping_add(line));
        }
        if let Ok(pass) = usize::try_from(self.pass) {
            let (queries, k) = self.returned_shape;
            let at = (pass * queries + q) * k;
            prefetch((self.returned_at.0 + at * 8) as *const u8);
            prefetch((self.returned_at.1 + at * 4) as *const u8);
        }
    }
}

struct Tally {
    sent: u64,
    completed: u64,
    errors: u64,
    latency_us: Histogram<u64>,
    last_done: Option<Instant>,
}

struct PhaseResult {
    sent: u64,
    completed: u64,
    errors: u64,
    elapsed: Duration,
    timed_out: bool,
    latency_us: Histogram<u64>,
    error_counts: BTreeMap<&'static str, u64>,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

/// Runs the warm-up and every pass; stops early (with `aborted` set) if the server dies.
pub async fn run_queries(plan: QueryPlan) -> (QueryStats, Returned) {
    let passes = plan.orders.len();
    let run = Arc::new(RunState {
        epoch: Instant::now(),
        last_alive_ms: AtomicU64::new(0),
        aborted: AtomicBool::new(false),
        abort_reason: Mutex::new(None),
        samples: Mutex::new(Vec::new()),
        returned: Mutex::new(Returned::new(
            passes,
            plan.bodies.len(),
            plan.settings.top_k as usize,
        )),
        settings: plan.settings.clone(),
    });
    let most = plan
        .concurrency
        .max(plan.warmup.as_ref().map_or(1, |w| w.concurrency))
        .max(1);
    // Connections persist across phases, so passes start on warm keep-alive connections.
    let mut pool: Vec<Client> = (0..most).map(|_| Client::new(plan.addr)).collect();
    let mut stats = QueryStats::default();
    // Every request's bytes, built before any clock starts.
    let requests = |bodies: &[Bytes]| Arc::new(Requests::new(plan.addr, bodies));

    if let Some(w) = &plan.warmup {
        let order = (0..w.count).map(|i| (i % w.bodies.len()) as u32).collect();
        let r = run_phase(
            &run,
            -1,
            requests(&w.bodies),
            order,
            w.concurrency,
            w.time_limit,
            &mut pool,
        )
        .await;
        stats.warmup = WarmupStats {
            sent: r.sent,
            completed: r.completed,
            errors: r.errors,
            elapsed_s: r.elapsed.as_secs_f64(),
            timed_out: r.timed_out,
            error_counts: r.error_counts,
        };
    }
    let pass_requests = requests(&plan.bodies);
    for (p, order) in plan.orders.iter().enumerate() {
        if run.is_aborted() {
            break;
        }
        let r = run_phase(
            &run,
            p as i64,
            pass_requests.clone(),
            order.clone(),
            plan.concurrency,
            plan.pass_time_limit,
            &mut pool,
        )
        .await;
        for (kind, n) in &r.error_counts {
            *stats.error_counts.entry(kind).or_default() += n;
        }
        stats.passes.push(pass_stats(r));
    }
    stats.error_samples = run.samples.lock().unwrap().clone();
    stats.aborted = run.abort_reason.lock().unwrap().clone();
    drop(pool);
    let returned = std::mem::replace(&mut *run.returned.lock().unwrap(), Returned::new(0, 0, 0));
    (stats, returned)
}

/// A server kept under measurement for many short passes (the scorer's paired rounds): the
/// requests are built once and the keep-alive connections stay open between passes, so a pass
/// costs its own time and nothing else. Pass p's answers are returned in the order it sent.
pub struct Session {
    run: Arc<RunState>,
    requests: Arc<Requests>,
    pool: Vec<Client>,
    concurrency: usize,
    queries: usize,
    passes: i64,
}

/// One pass of a `Session`: its statistics, its error samples, the reason the session was
/// aborted (a dead server) if it was, and the answers row by row in the pass's order.
pub struct SessionPass {
    pub stats: PassStats,
    pub samples: Vec<ErrorSample>,
    pub aborted: Option<String>,
    pub ids: Vec<i64>,
    pub dists: Vec<f32>,
}

impl Session {
    pub fn new(addr: SocketAddr, bodies: &[Bytes], concurrency: usize, settings: Settings) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            run: Arc::new(RunState {
                epoch: Instant::now(),
                last_alive_ms: AtomicU64::new(0),
                aborted: AtomicBool::new(false),
                abort_reason: Mutex::new(None),
                samples: Mutex::new(Vec::new()),
                returned: Mutex::new(Returned::new(0, 0, 0)),
                settings,
            }),
            requests: Arc::new(Requests::new(addr, bodies)),
            pool: (0..concurrency).map(|_| Client::new(addr)).collect(),
            concurrency,
            queries: bodies.len(),
            passes: 0,
        }
    }

    /// The number of queries a pass may index.
    pub fn queries(&self) -> usize {
        self.queries
    }

    /// One timed pass over `order` (indices below `queries()`), as a pass of `run_queries`.
    pub async fn pass(&mut self, order: Vec<u32>, time_limit: Option<Duration>) -> SessionPass {
        let k = self.run.settings.top_k as usize;
        *self.run.returned.lock().unwrap() = Returned::new(1, self.queries, k);
        let r = run_phase(
            &self.run,
            0,
            self.requests.clone(),
            order.clone(),
            self.concurrency,
            time_limit,
            &mut self.pool,
        )
        .await;
        let returned = std::mem::replace(
            &mut *self.run.returned.lock().unwrap(),
            Returned::new(0, 0, 0),
        );
        let mut ids = Vec::with_capacity(order.len() * k);
        let mut dists = Vec::with_capacity(order.len() * k);
        for &q in &order {
            let at = q as usize * k;
            ids.extend_from_slice(&returned.ids[at..at + k]);
            dists.extend_from_slice(&returned.dists[at..at + k]);
        }
        let mut samples = std::mem::take(&mut *self.run.samples.lock().unwrap());
        for s in &mut samples {
            s.pass = self.passes;
        }
        self.passes += 1;
        SessionPass {
            stats: pass_stats(r),
            samples,
            aborted: self.run.abort_reason.lock().unwrap().clone(),
            ids,
            dists,
        }
    }
}

fn pass_stats(r: PhaseResult) -> PassStats {
    let elapsed_s = r.elapsed.as_secs_f64();
    let h = &r.latency_us;
    let ms = |us: u64| us as f64 / 1000.0;
    let latency_ms = if h.is_empty() {
        LatencyMs::default()
    } else {
        LatencyMs {
            p50: Some(ms(h.value_at_quantile(0.50))),
            p95: Some(ms(h.value_at_quantile(0.95))),
            p99: Some(ms(h.value_at_quantile(0.99))),
            max: Some(ms(h.max())),
            mean: Some(h.mean() / 1000.0),
        }
    };
    PassStats {
        sent: r.sent,
        completed: r.completed,
        errors: r.errors,
        elapsed_s,
        qps: if elapsed_s > 0.0 {
            r.completed as f64 / elapsed_s
        } else {
            0.0
        },
        timed_out: r.timed_out,
        latency_ms,
        error_counts: r.error_counts,
    }
}

async fn run_phase(
    run: &Arc<RunState>,
    pass: i64,
    requests: Arc<Requests>,
    order: Vec<u32>,
    concurrency: usize,
    time_limit: Option<Duration>,
    pool: &mut Vec<Client>,
) -> PhaseResult {
    let concurrency = concurrency.clamp(1, pool.len());
    // Open missing connections before the clock starts; failures are retried by the workers.
    for client in pool.iter_mut().take(concurrency) {
        if !client.ready().await && client.connect().await.is_ok() {
            run.mark_alive();
        }
    }
    let start = Instant::now();
    let ctx = Arc::new(PhaseCtx {
        run: run.clone(),
        pass,
        requests,
        returned_at: {
            let returned = run.returned.lock().unwrap();
            (
                returned.ids.as_ptr() as usize,
                returned.dists.as_ptr() as usize,
            )
        },
        returned_shape: {
            let returned = run.returned.lock().unwrap();
            (returned.queries, returned.k)
        },
        order,
        cursor: AtomicUsize::new(0),
        workers: concurrency,
        deadline: time_limit.map(|t| start + t),
        timed_out: AtomicBool::new(false),
        error_counts: Mutex::new(BTreeMap::new()),
    });
    let mut workers = tokio::task::JoinSet::new();
    for client in pool.drain(..concurrency) {
        workers.spawn(worker(ctx.clone(), client));
    }
    let mut result = PhaseResult {
        sent: 0,
        completed: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        timed_out: false,
        latency_us: new_histogram(),
        error_counts: BTreeMap::new(),
    };
    let mut last_done: Option<Instant> = None;
    while let Some(joined) = workers.join_next().await {
        let (tally, client) = joined.expect("query worker panicked");
        pool.push(client);
        result.sent += tally.sent;
        result.completed += tally.completed;
        result.errors += tally.errors;
        result
            .latency_us
            .add(&tally.latency_us)
            .expect("histograms share bounds");
        last_done = last_done.max(tally.last_done);
    }
    result.elapsed =
        last_done.map_or_else(|| start.elapsed(), |t| t.saturating_duration_since(start));
    result.timed_out = ctx.timed_out.load(Ordering::Relaxed);
    result.error_counts = std::mem::take(&mut *ctx.error_counts.lock().unwrap());
    result
}

async fn worker(ctx: Arc<PhaseCtx>, mut client: Client) -> (Tally, Client) {
    let settings = &ctx.run.settings;
    let mut tally = Tally {
        sent: 0,
        completed: 0,
        errors: 0,
        latency_us: new_histogram(),
        last_done: None,
    };
    let mut buf = Vec::new();
    let mut hits: Vec<Hit> = Vec::with_capacity(settings.top_k.min(1024) as usize);
    // One timer per worker, re-armed lazily: it is reset only when it would fire late, and
    // when it fires before the current request's deadline it is pushed to that deadline.
    // Requests take microseconds and the timeout seconds, so it is rarely touched, where a
    // timeout per request would register and cancel a timer every time.
    let mut timer = std::pin::pin!(tokio::time::sleep(settings.request_timeout));
    loop {
        if ctx.run.is_aborted() {
            break;
        }
        // One clock read serves the pass deadline, the request deadline and, unless a
        // connection must be opened first, the send time.
        let now = Instant::now();
        if ctx.deadline.is_some_and(|d| now >= d) {
            if ctx.cursor.load(Ordering::Relaxed) < ctx.order.len() {
                ctx.timed_out.store(true, Ordering::Relaxed);
            }
            break;
        }
        let i = ctx.cursor.fetch_add(1, Ordering::Relaxed);
        let Some(&query) = ctx.order.get(i) else {
            break;
        };
        // The queries a few requests ahead are in random order: fetch their request bytes
        // and result slots into the cache while this one is on the wire.
        ctx.prefetch(i + ctx.workers);
        tally.sent += 1;
        // A warm-up request may take up to the rest of the warm-up: it is there to absorb a
        // lazy index build, which can take far longer than one query may in a pass.
        let mut limit = settings.request_timeout;
        if ctx.pass < 0 {
            if let Some(deadline) = ctx.deadline {
                limit = limit.max(deadline.saturating_duration_since(now));
            }
        }
        let deadline = tokio::time::Instant::from_std(now) + limit;
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        let outcome = {
            let request = ctx.requests.get(query as usize);
            let attempt = send_search(&ctx, &mut client, request, now, &mut buf);
            let mut attempt = std::pin::pin!(attempt);
            loop {
                tokio::select! {
                    biased;
                    outcome = &mut attempt => break Some(outcome),
                    () = &mut timer => {
                        if tokio::time::Instant::now() >= deadline {
                            break None;
                        }
                        timer.as_mut().reset(deadline);
                    }
                }
            }
        };
        let outcome = outcome.unwrap_or_else(|| {
            client.disconnect();
            let detail = format!("no complete response within {limit:?}");
            Err(Failure::new(ErrorKind::Timeout, detail))
        });
        let done = Instant::now();
        tally.last_done = Some(done);
        let failure = match outcome {
            Err(failure) => Some(failure),
            Ok(sent_at) => {
                ctx.run.mark_alive_at(done);
                let (parsed, failure) =
                    check_search_into(&buf, settings.top_k, settings.max_id, &mut hits);
                let took = done.duration_since(sent_at);
                if let (true, Ok(pass)) = (parsed, usize::try_from(ctx.pass)) {
                    let ms = match failure {
                        None => took.as_secs_f32() * 1000.0,
                        Some(_) => f32::NAN,
                    };
                    ctx.run
                        .returned
                        .lock()
                        .unwrap()
                        .store(pass, query as usize, &hits, ms);
                }
                if failure.is_none() {
                    tally.completed += 1;
                    let us = took.as_micros().max(1) as u64;
                    tally.latency_us.saturating_record(us);
                }
                failure
            }
        };
        if let Some(failure) = failure {
            tally.errors += 1;
            *ctx.error_counts
                .lock()
                .unwrap()
                .entry(failure.kind.as_str())
                .or_default() += 1;
            ctx.run.sample(ctx.pass, query, &failure);
        }
    }
    (tally, client)
}

/// Sends one search (reconnecting if needed) and leaves a 200 body in `buf`; returns when
/// the request went out on a ready connection (the start of its latency).
async fn send_search(
    ctx: &PhaseCtx,
    client: &mut Client,
    request: &[u8],
    now: Instant,
    buf: &mut Vec<u8>,
) -> Result<Instant, Failure> {
    let mut sent_at = now;
    if !client.ready().await {
        connect_or_abort(&ctx.run, client).await?;
        sent_at = Instant::now();
    }
    let status = client.send(request, ctx.run.settings.max_body, buf).await?;
    if status != 200 {
        ctx.run.mark_alive();
        let detail = format!("HTTP {status}: {}", lossy_prefix(buf, 200));
        return Err(Failure::new(ErrorKind::HttpStatus, detail));
    }
    Ok(sent_at)
}

/// Connects, retrying while the server refuses; aborts the run once connections have
/// failed for `DEAD_AFTER` and no worker has reached the server meanwhile.
async fn connect_or_abort(run: &RunState, client: &mut Client) -> Result<(), Failure> {
    let first_failure = Instant::now();
    loop {
        match client.connect().await {
            Ok(()) => {
                run.mark_alive();
                return Ok(());
            }
            Err(e) => {
                let failure = Failure::new(
                    ErrorKind::Connect,
                    format!("connect to {}: {e}", client.addr()),
                );
                if run.is_aborted() {
                    return Err(failure);
                }
                if first_failure.elapsed() >= DEAD_AFTER && run.since_alive() >= DEAD_AFTER {
                    run.abort(format!(
                        "server unreachable: connections to {} failed for {} s ({e})",
                        client.addr(),
                        DEAD_AFTER.as_secs()
                    ));
                    return Err(failure);
                }
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
        }
    }
}
