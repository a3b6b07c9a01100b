//! `devbench`: the agent's own benchmark inside its sandbox. Builds the workspace, starts
//! the server, loads the base vectors, runs a warm-up and timed passes over the dev queries
//! and reports QPS, latency and recall@10 against the dev ground truth. A dev measurement,
//! never the official score (the scorer uses hidden queries on its own CPUs).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Serialize;

use loadgen::load::{run_load, LoadPlan};
use loadgen::query::{run_queries, QueryPlan, QueryStats, Returned, Settings, Warmup};
use loadgen::vecs::{read_fvecs, read_ivecs};

const TOP_K: usize = 10;
const START_TIMEOUT: Duration = Duration::from_secs(30);
const QUICK_PROFILE: &str = "quick (release with lto=off, codegen-units=16)";
/// The quick build's profile overrides (environment beats Cargo.toml), and its target subfolder.
const QUICK_ENV: [(&str, &str); 2] = [
    ("CARGO_PROFILE_RELEASE_LTO", "off"),
    ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16"),
];
const QUICK_DIR: &str = "quick";
const NOTICE: &str = "DEV measurement on the dev queries, not the official score \
(the scorer uses hidden queries, several passes, its own CPUs and tie-aware recall)";

#[derive(Parser)]
#[command(
    version,
    about = "Build, start and benchmark the vector-DB server in the workspace (a dev measurement)"
)]
struct Cli {
    #[arg(long, default_value = "/workspace")]
    workspace: PathBuf,
    /// Folder with base.fvecs, dev_queries.fvecs, dev_groundtruth.ivecs.
    #[arg(long, default_value = "/data")]
    data: PathBuf,
    #[arg(long, default_value_t = 18080)]
    port: u16,
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Number of dev queries per pass (the first N).
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    #[arg(long, default_value_t = 1)]
    passes: usize,
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    #[arg(long, default_value_t = 300.0)]
    pass_time_limit_s: f64,
    #[arg(long, default_value_t = 600.0)]
    load_time_limit_s: f64,
    /// Use the binary already built.
    #[arg(long)]
    skip_build: bool,
    /// A quick dev build: the release profile with LTO off and 16 codegen units, in
    /// <target>/quick (its dependencies come pre-built). It compiles about 4x faster than the
    /// release build the scorer makes; recall is the same, QPS is lower (without LTO the HTTP
    /// path is slower: -10% to -35% measured on a small set), so compare QPS within one mode.
    #[arg(long)]
    quick: bool,
    /// Print the report as JSON on stdout (build output goes to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Default, Serialize)]
struct Report {
    notice: &'static str,
    ok: bool,
    error: Option<String>,
    build_s: Option<f64>,
    /// "release" (Cargo.toml's profile, as the scorer builds) or the quick dev build's overrides.
    build_profile: &'static str,
    load_s: Option<f64>,
    vectors: Option<u64>,
    queries: usize,
    passes: usize,
    concurrency: usize,
    qps: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// Mean overlap of the first 10 returned ids with the dev ground truth's first 10.
    recall_at_10: Option<f64>,
    errors: u64,
    server_log: Option<PathBuf>,
    query_stats: Option<QueryStats>,
}

/// The server process; killed when dropped, on every path out of the benchmark.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut report = Report {
        notice: NOTICE,
        queries: cli.queries,
        passes: cli.passes,
        concurrency: cli.concurrency,
        build_profile: if cli.quick { QUICK_PROFILE } else { "release" },
        ..Report::default()
    };
    if let Err(e) = bench(&cli, &mut report) {
        report.error = Some(format!("{e:#}"));
    }
    report.ok = report.error.is_none();
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serializes")
        );
    } else {
        print_summary(&report);
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn bench(cli: &Cli, report: &mut Report) -> Result<()> {
    if cli.queries == 0 || cli.passes == 0 || cli.concurrency == 0 {
        bail!("--queries, --passes and --concurrency must be at least 1");
    }
    let workspace = cli
        .workspace
        .canonicalize()
        .with_context(|| format!("no workspace at {}", cli.workspace.display()))?;
    if !cli.skip_build {
        let started = Instant::now();
        build(&workspace, cli.quick)?;
        report.build_s = Some(started.elapsed().as_secs_f64());
    }
    let binary = server_binary(&workspace, cli.quick)?;
    // Read our inputs before starting the server, so that a bad data folder fails fast.
    let dev_queries = read_fvecs(&cli.data.join("dev_queries.fvecs"), Some(cli.queries))?;
    let truth = read_ivecs(
        &cli.data.join("dev_groundtruth.ivecs"),
        Some(dev_queries.rows),
    )?;
    if truth.rows < dev_queries.rows || truth.dim < TOP_K {
        bail!(
            "dev_groundtruth.ivecs has {} rows of {} ids; need {} rows of >= {TOP_K}",
            truth.rows,
            truth.dim,
            dev_queries.rows
        );
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], cli.port));
    if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
        bail!(
            "port {} already accepts connections (a server left running?); stop it or pass --port",
            cli.port
        );
    }
    let mut server = start_server(&binary, &workspace, cli.port)?;
    report.server_log = Some(server.log.clone());
    wait_for_tcp(&mut server, addr)?;

    let runtime = loadgen::runtime(1)?;
    let load = runtime.block_on(run_load(&LoadPlan {
        addr,
        base: cli.data.join("base.fvecs"),
        batch_size: 1000,
        limit: None,
        time_limit: Some(Duration::from_secs_f64(cli.load_time_limit_s)),
        request_timeout: Duration::from_secs(120),
        max_body: 1 << 20,
    }))?;
    report.load_s = Some(load.elapsed_s);
    report.vectors = Some(load.vectors);
    if let Some(error) = load.error {
        bail!(
            "load failed after {} vectors: {error}{}",
            load.vectors,
            exit_note(&mut server)
        );
    }

    let n = dev_queries.rows;
    report.queries = n;
    let bodies = Arc::new(loadgen::search_bodies(&dev_queries, TOP_K as u32));
    let plan = QueryPlan {
        addr,
        bodies: bodies.clone(),
        orders: (0..cli.passes)
            .map(|p| shuffled(n, 42 + p as u64))
            .collect(),
        concurrency: cli.concurrency,
        pass_time_limit: Some(Duration::from_secs_f64(cli.pass_time_limit_s)),
        warmup: (cli.warmup > 0).then(|| Warmup {
            bodies,
            count: cli.warmup,
            concurrency: 1,
            time_limit: Some(Duration::from_secs(120)),
        }),
        settings: Settings {
            top_k: TOP_K as u32,
            max_id: load.vectors,
            request_timeout: Duration::from_secs(10),
            max_body: 1 << 20,
        },
    };
    let (stats, returned) = runtime.block_on(run_queries(plan));
    let passes = &stats.passes;
    let median = |f: fn(&loadgen::query::PassStats) -> Option<f64>| {
        median(passes.iter().filter_map(f).collect())
    };
    report.qps = median(|p| Some(p.qps));
    report.p50_ms = median(|p| p.latency_ms.p50);
    report.p99_ms = median(|p| p.latency_ms.p99);
    report.recall_at_10 = Some(recall_at_10(&returned, passes.len(), &truth));
    report.errors = stats.error_counts.values().sum::<u64>() + stats.warmup.errors;
    let aborted = stats.aborted.clone();
    report.query_stats = Some(stats);
    if let Some(reason) = aborted {
        bail!("queries aborted: {reason}{}", exit_note(&mut server));
    }
    if let Ok(Some(status)) = server.child.try_wait() {
        bail!("the server exited during the benchmark ({status})");
    }
    Ok(())
}

fn build(workspace: &Path, quick: bool) -> Result<()> {
    // Build output streams to stderr, keeping stdout for the report.
    let mut cargo = Command::new("cargo");
    cargo.args(["build", "--release", "--offline"]);
    if quick {
        cargo
            .envs(QUICK_ENV)
            .env("CARGO_TARGET_DIR", target_dir(workspace, true));
    }
    let status = cargo
        .current_dir(workspace)
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build --release --offline failed ({status}); see the errors above");
    }
    Ok(())
}

/// target/ or CARGO_TARGET_DIR (relative to the workspace); its quick/ subfolder for --quick.
fn target_dir(workspace: &Path, quick: bool) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), |d| workspace.join(d));
    if quick {
        target.join(QUICK_DIR)
    } else {
        target
    }
}

/// <target>/release/<bin> where <bin> is the first [[bin]] name, else the package name.
fn server_binary(workspace: &Path, quick: bool) -> Result<PathBuf> {
    let manifest = workspace.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    let name =
        binary_name(&text).with_context(|| format!("no package name in {}", manifest.display()))?;
    let binary = target_dir(workspace, quick).join("release").join(name);
    if !binary.is_file() {
        bail!(
            "no server binary at {} (build first, or drop --skip-build)",
            binary.display()
        );
    }
    Ok(binary)
}

/// The binary's name from Cargo.toml: a deliberately small reader of `name = "..."` under
/// `[[bin]]` (first one wins) or `[package]`.
fn binary_name(manifest: &str) -> Option<String> {
    let (mut section, mut package, mut bin) = (String::new(), None, None);
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
        } else if let Some(value) = line
            .strip_prefix("name")
            .map(str::trim_start)
            .and_then(|l| l.strip_prefix('='))
        {
            let value = value.trim().trim_matches('"').to_owned();
            match section.as_str() {
                "[package]" if package.is_none() => package = Some(value),
                "[[bin]]" if bin.is_none() => bin = Some(value),
                _ => {}
            }
        }
    }
    bin.or(package)
}

fn start_server(binary: &Path, workspace: &Path, port: u16) -> Result<Server> {
    let log = std::env::temp_dir().join(format!("devbench-server-{port}.log"));
    let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let child = Command::new(binary)
        .env("PORT", port.to_string())
        .current_dir(workspace)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    Ok(Server { child, log })
}

fn wait_for_tcp(server: &mut Server, addr: SocketAddr) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < START_TIMEOUT {
        if let Some(status) = server.child.try_wait()? {
            bail!(
                "the server exited before accepting connections ({status}){}",
                log_tail(&server.log)
            );
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "the server did not accept TCP on {addr} within {} s{}",
        START_TIMEOUT.as_secs(),
        log_tail(&server.log)
    )
}

/// When the server has exited: its status and the end of its log, for error messages.
fn exit_note(server: &mut Server) -> String {
    match server.child.try_wait() {
        Ok(Some(status)) => format!("; the server exited ({status}){}", log_tail(&server.log)),
        _ => String::new(),
    }
}

/// The informative end of the server's log: from its last panic message when there is one
/// (a backtrace after it would push it out of a plain tail), else the last lines.
fn log_tail(log: &Path) -> String {
    const MAX: usize = 2000;
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(log) {
        let len = file.metadata().map_or(0, |m| m.len());
        // A log can be large: read at most its last 256 KiB.
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(256 << 10)));
        let _ = file.read_to_end(&mut bytes);
    }
    let text = String::from_utf8_lossy(&bytes);
    let start = match text.rfind("panicked at") {
        Some(at) => text[..at].rfind('\n').map_or(0, |nl| nl + 1),
        None => text.len().saturating_sub(MAX),
    };
    let excerpt: String = text
        .get(start..)
        .unwrap_or(&text)
        .chars()
        .take(MAX)
        .collect();
    if excerpt.trim().is_empty() {
        String::new()
    } else {
        format!(
            "\n--- server log ({}) ---\n{}",
            log.display(),
            excerpt.trim_end()
        )
    }
}

/// 0..n in a deterministic shuffled order (Fisher-Yates over splitmix64).
fn shuffled(n: usize, seed: u64) -> Vec<u32> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut order: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        order.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    order
}

/// Mean over passes and queries of |first 10 returned ids ∩ first 10 true ids| / 10.
fn recall_at_10(returned: &Returned, passes: usize, truth: &loadgen::vecs::Matrix<i32>) -> f64 {
    if passes == 0 || returned.queries == 0 {
        return 0.0;
    }
    let mut hits = 0usize;
    for p in 0..passes {
        for q in 0..returned.queries {
            let expected = &truth.row(q)[..TOP_K];
            let ids = returned.ids_of(p, q);
            // A duplicated id counts once (duplicates are errors, never extra hits).
            hits += ids
                .iter()
                .enumerate()
                .filter(|&(j, &id)| {
                    id >= 0 && expected.contains(&(id as i32)) && !ids[..j].contains(&id)
                })
                .count();
        }
    }
    hits as f64 / (passes * returned.queries * TOP_K) as f64
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

fn print_summary(r: &Report) {
    let fmt = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
    };
    println!("devbench: {NOTICE}");
    if let Some(b) = r.build_s {
        println!("  build       {b:.1} s, {}", r.build_profile);
    }
    if let Some(l) = r.load_s {
        println!(
            "  load        {} vectors in {l:.1} s",
            r.vectors.unwrap_or(0)
        );
    }
    if let Some(stats) = &r.query_stats {
        println!(
            "  queries     {} x {} pass(es) at concurrency {}",
            r.queries, r.passes, r.concurrency
        );
        println!("  QPS         {}", fmt(r.qps, 0));
        println!(
            "  latency     p50 {} ms, p99 {} ms",
            fmt(r.p50_ms, 3),
            fmt(r.p99_ms, 3)
        );
        println!(
            "  recall@10   {} (id overlap with dev_groundtruth)",
            fmt(r.recall_at_10, 4)
        );
        println!("  errors      {}", r.errors);
        for (kind, n) in &stats.error_counts {
            println!("    {kind}: {n}");
        }
        for s in stats.error_samples.iter().take(3) {
            println!("    e.g. query {}: {} ({})", s.query, s.kind, s.detail);
        }
        if stats.passes.iter().any(|p| p.timed_out) {
            println!("  note        a pass hit its time limit; QPS counts what completed");
        }
    }
    if let Some(e) = &r.error {
        println!("  FAILED      {e}");
        if let Some(log) = &r.server_log {
            println!("  server log  {}", log.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_name_prefers_the_first_bin() {
        assert_eq!(
            binary_name("[package]\nname = \"vector-db\"\n").as_deref(),
            Some("vector-db")
        );
        let manifest =
            "[package]\nname=\"pkg\"\n[dependencies]\nname = \"x\"\n[[bin]]\nname = \"server\"\n";
        assert_eq!(binary_name(manifest).as_deref(), Some("server"));
    }

    #[test]
    fn shuffle_is_a_deterministic_permutation() {
        let a = shuffled(1000, 42);
        assert_eq!(a, shuffled(1000, 42));
        assert_ne!(a, shuffled(1000, 43));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<u32>>());
    }
}
