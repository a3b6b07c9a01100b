//! `loadgen`: the scorer's load generator. Exits non-zero only for its own bad arguments or
//! I/O; whatever the server does is reported in the stats file for the scorer to judge.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use loadgen::load::{run_load, LoadPlan};
use loadgen::query::{run_queries, QueryPlan, Settings, Warmup};
use loadgen::vecs::{read_fvecs, read_u32_array};

#[derive(Parser)]
#[command(version, about = "Load generator for staircase's vector-DB scorer")]
struct Cli {
    /// Runtime worker threads (1 = a single-threaded runtime).
    #[arg(long, default_value_t = 1, global = true)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bulk-insert base vectors (ids = row index) in batches to POST /bulk_insert.
    Load(LoadArgs),
    /// Warm-up, then timed closed-loop passes of POST /search; writes ids, distances, stats.
    Query(QueryArgs),
    /// Timed passes on request, over a Unix socket, on connections kept open between them.
    Rounds(RoundsArgs),
    /// A server that answers instantly, for measuring the generator's own ceiling.
    TrivialServer(TrivialArgs),
}

#[derive(Args)]
struct LoadArgs {
    #[arg(long)]
    addr: String,
    #[arg(long)]
    base: PathBuf,
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Load only the first N vectors.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long)]
    time_limit_s: Option<f64>,
    #[arg(long, default_value_t = 120.0)]
    request_timeout_s: f64,
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct QueryArgs {
    #[arg(long)]
    addr: String,
    /// Query vectors (fvecs); row q is query index q.
    #[arg(long)]
    queries: PathBuf,
    /// Little-endian u32 array of PASSES rows of query indices, the sending order per pass.
    #[arg(long)]
    orders: PathBuf,
    #[arg(long)]
    passes: usize,
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    top_k: u32,
    /// Number of inserted vectors: every returned id must be below it.
    #[arg(long)]
    max_id: u64,
    #[arg(long)]
    pass_time_limit_s: Option<f64>,
    #[arg(long, default_value_t = 10.0)]
    request_timeout_s: f64,
    /// Warm-up vectors (fvecs); no warm-up without it.
    #[arg(long)]
    warmup_queries: Option<PathBuf>,
    #[arg(long, default_value_t = 100)]
    warmup_count: usize,
    #[arg(long, default_value_t = 1)]
    warmup_concurrency: usize,
    /// Bounds the warm-up; a warm-up request may take up to the rest of it (a lazy index
    /// build), not just --request-timeout-s.
    #[arg(long, default_value_t = 300.0)]
    warmup_time_limit_s: f64,
    /// Returned ids, little-endian i64, shape (passes, queries, top_k), -1 where missing.
    #[arg(long)]
    ids_out: PathBuf,
    /// Returned distances, little-endian f32, same shape, NaN where missing.
    #[arg(long)]
    dists_out: PathBuf,
    /// Latency of every answered query in ms, little-endian f32, shape (passes, queries),
    /// NaN where the query was not sent or failed.
    #[arg(long)]
    latency_out: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
}

#[derive(Args)]
struct RoundsArgs {
    #[arg(long)]
    addr: String,
    /// Query vectors (fvecs); row q is query index q.
    #[arg(long)]
    queries: PathBuf,
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    top_k: u32,
    #[arg(long)]
    max_id: u64,
    #[arg(long, default_value_t = 10.0)]
    request_timeout_s: f64,
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Folder the answers are written to (OUT.ids, OUT.dists for a request's "out").
    #[arg(long)]
    io: PathBuf,
    /// Unix socket to listen on (created; one client; the process exits when it hangs up).
    #[arg(long)]
    control: PathBuf,
}

#[derive(Args)]
struct TrivialArgs {
    #[arg(long)]
    port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
}

fn seconds(name: &str, s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("--{name} must be a positive number of seconds, got {s}"))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = loadgen::runtime(cli.threads)?;
    match cli.command {
        Command::Load(args) => runtime.block_on(load(args)),
        Command::Query(args) => runtime.block_on(query(args)),
        Command::Rounds(args) => runtime.block_on(rounds(args)),
        Command::TrivialServer(args) => {
            runtime.block_on(loadgen::trivial::serve((args.host, args.port).into()))
        }
    }
}

async fn load(args: LoadArgs) -> Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let plan = LoadPlan {
        addr: loadgen::resolve(&args.addr).await?,
        base: args.base,
        batch_size: args.batch_size,
        limit: args.limit,
        time_limit: args
            .time_limit_s
            .map(|s| seconds("time-limit-s", s))
            .transpose()?,
        request_timeout: seconds("request-timeout-s", args.request_timeout_s)?,
        max_body: args.max_body_bytes,
    };
    let stats = run_load(&plan).await?;
    loadgen::write_json(&args.out, &stats)
}

/// Splits the orders file into `passes` rows, checking every index against `queries`.
fn split_orders(path: &Path, passes: usize, queries: usize) -> Result<Vec<Vec<u32>>> {
    let flat = read_u32_array(path)?;
    if passes == 0 || flat.is_empty() || flat.len() % passes != 0 {
        bail!(
            "{}: {} indices do not split into {passes} non-empty passes",
            path.display(),
            flat.len()
        );
    }
    if let Some(bad) = flat.iter().find(|&&q| q as usize >= queries) {
        bail!(
            "{}: query index {bad} is not below the number of queries {queries}",
            path.display()
        );
    }
    Ok(flat
        .chunks_exact(flat.len() / passes)
        .map(<[u32]>::to_vec)
        .collect())
}

async fn query(args: QueryArgs) -> Result<()> {
    if args.concurrency == 0 || args.warmup_concurrency == 0 || args.top_k == 0 {
        bail!("--concurrency, --warmup-concurrency and --top-k must be at least 1");
    }
    let queries = read_fvecs(&args.queries, None)?;
    let orders = split_orders(&args.orders, args.passes, queries.rows)?;
    let warmup = match &args.warmup_queries {
        Some(path) if args.warmup_count > 0 => {
            let vectors = read_fvecs(path, Some(args.warmup_count))?;
            Some(Warmup {
                bodies: Arc::new(loadgen::search_bodies(&vectors, args.top_k)),
                count: args.warmup_count,
                concurrency: args.warmup_concurrency,
                time_limit: Some(seconds("warmup-time-limit-s", args.warmup_time_limit_s)?),
            })
        }
        _ => None,
    };
    let plan = QueryPlan {
        addr: loadgen::resolve(&args.addr).await?,
        bodies: Arc::new(loadgen::search_bodies(&queries, args.top_k)),
        orders,
        concurrency: args.concurrency,
        pass_time_limit: args
            .pass_time_limit_s
            .map(|s| seconds("pass-time-limit-s", s))
            .transpose()?,
        warmup,
        settings: Settings {
            top_k: args.top_k,
            max_id: args.max_id,
            request_timeout: seconds("request-timeout-s", args.request_timeout_s)?,
            max_body: args.max_body_bytes,
        },
    };
    let (stats, returned) = run_queries(plan).await;
    let ids: Vec<u8> = returned.ids.iter().flat_map(|v| v.to_le_bytes()).collect();
    let dists: Vec<u8> = returned
        .dists
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    loadgen::write_atomic(&args.ids_out, &ids)?;
    loadgen::write_atomic(&args.dists_out, &dists)?;
    if let Some(path) = &args.latency_out {
        let latency: Vec<u8> = returned
            .latency_ms
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        loadgen::write_atomic(path, &latency)?;
    }
    loadgen::write_json(&args.out, &stats)
}

/// A request of `loadgen rounds`: one pass over `order`, answers to `{io}/{out}.ids|.dists`.
#[derive(serde::Deserialize)]
struct PassRequest {
    order: Vec<u32>,
    out: String,
    pass_time_limit_s: Option<f64>,
}

#[derive(serde::Serialize)]
struct PassReply<'a> {
    pass: &'a loadgen::query::PassStats,
    error_samples: &'a [loadgen::query::ErrorSample],
    aborted: &'a Option<String>,
}

async fn rounds(args: RoundsArgs) -> Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    if args.concurrency == 0 || args.top_k == 0 {
        bail!("--concurrency and --top-k must be at least 1");
    }
    let queries = read_fvecs(&args.queries, None)?;
    let mut session = loadgen::query::Session::new(
        loadgen::resolve(&args.addr).await?,
        &loadgen::search_bodies(&queries, args.top_k),
        args.concurrency,
        Settings {
            top_k: args.top_k,
            max_id: args.max_id,
            request_timeout: seconds("request-timeout-s", args.request_timeout_s)?,
            max_body: args.max_body_bytes,
        },
    );
    let _ = std::fs::remove_file(&args.control);
    let listener = tokio::net::UnixListener::bind(&args.control)
        .with_context(|| format!("cannot listen on {}", args.control.display()))?;
    let (stream, _) = listener.accept().await?;
    drop(listener);
    let _ = std::fs::remove_file(&args.control);
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let reply = match serve_pass(&mut session, &args.io, &line).await {
            Ok(text) => text,
            Err(e) => serde_json::to_vec(&serde_json::json!({ "error": format!("{e:#}") }))?,
        };
        write.write_all(&reply).await?;
        write.write_all(b"\n").await?;
    }
    Ok(())
}

async fn serve_pass(
    session: &mut loadgen::query::Session,
    io: &Path,
    line: &str,
) -> Result<Vec<u8>> {
    let req: PassRequest = serde_json::from_str(line)
        .context("a request must be {\"order\": [...], \"out\": NAME}")?;
    if req.order.is_empty() {
        bail!("an empty order");
    }
    if let Some(bad) = req.order.iter().find(|&&q| q as usize >= session.queries()) {
        bail!(
            "query index {bad} is not below the number of queries {}",
            session.queries()
        );
    }
    if req.out.is_empty() || req.out.contains('/') || req.out.starts_with('.') {
        bail!("\"out\" must be a plain file name, got {:?}", req.out);
    }
    let limit = req
        .pass_time_limit_s
        .map(|s| seconds("pass_time_limit_s", s))
        .transpose()?;
    let done = session.pass(req.order, limit).await;
    // Scratch answers read once by the scorer: renamed into place, not synced to disk.
    let put = |ext: &str, bytes: Vec<u8>| -> Result<()> {
        let path = io.join(format!("{}.{ext}", req.out));
        let tmp = io.join(format!("{}.{ext}.tmp", req.out));
        std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
    };
    put(
        "ids",
        done.ids.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )?;
    put(
        "dists",
        done.dists.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )?;
    Ok(serde_json::to_vec(&PassReply {
        pass: &done.stats,
        error_samples: &done.samples,
        aborted: &done.aborted,
    })?)
}
