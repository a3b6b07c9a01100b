//! `staircase-oracle-bench`: a reference stage's `VectorDB` measured in-process, one thread.
//!
//! Loads the base vectors through `VectorDB::bulk_insert` in batches (ids = row index, as the
//! scorer's load generator sends them), triggers the lazy index build with one search (timed on
//! its own), warms up on a few more base vectors, then times every query one at a time. Writes the
//! returned ids (little-endian i64, `queries x k`, -1 where fewer came back) to `--out` and a JSON
//! summary to stdout. No HTTP, no JSON per request: what is left is the stage's own search.
//!
//! The stage's files are compiled in as modules by `build.rs` (see there).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

include!(concat!(env!("OUT_DIR"), "/stage_modules.rs"));

use db::VectorDB;

struct Args {
    base: PathBuf,
    queries: PathBuf,
    out: PathBuf,
    k: u32,
    batch_size: usize,
    max_queries: Option<usize>,
    warmup: usize,
    repeats: usize,
}

const USAGE: &str = "usage: staircase-oracle-bench --base BASE.fvecs --queries QUERIES.fvecs --out IDS.bin \
                     [--k 10] [--batch-size 1000] [--max-queries N] [--warmup 100] [--repeats 1]";

fn parse_args() -> Result<Args, String> {
    let mut argv = std::env::args().skip(1);
    let (mut base, mut queries, mut out) = (None, None, None);
    let mut args = Args {
        base: PathBuf::new(),
        queries: PathBuf::new(),
        out: PathBuf::new(),
        k: 10,
        batch_size: 1000,
        max_queries: None,
        warmup: 100,
        repeats: 1,
    };
    while let Some(flag) = argv.next() {
        let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|e| format!("{flag} {value}: {e}"));
        match flag.as_str() {
            "--base" => base = Some(PathBuf::from(&value)),
            "--queries" => queries = Some(PathBuf::from(&value)),
            "--out" => out = Some(PathBuf::from(&value)),
            "--k" => args.k = number()? as u32,
            "--batch-size" => args.batch_size = number()?.max(1),
            "--max-queries" => args.max_queries = Some(number()?),
            "--warmup" => args.warmup = number()?,
            "--repeats" => args.repeats = number()?.max(1),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    args.base = base.ok_or("--base is required")?;
    args.queries = queries.ok_or("--queries is required")?;
    args.out = out.ok_or("--out is required")?;
    Ok(args)
}

/// Reads fvecs records one at a time (int32 dimension, then that many float32 values).
struct Fvecs {
    reader: BufReader<File>,
    dim: Option<usize>,
}

impl Fvecs {
    fn open(path: &PathBuf) -> io::Result<Self> {
        Ok(Fvecs { reader: BufReader::with_capacity(1 << 20, File::open(path)?), dim: None })
    }

    fn next_record(&mut self) -> io::Result<Option<Vec<f32>>> {
        let mut header = [0u8; 4];
        match self.reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let d = i32::from_le_bytes(header);
        let d = usize::try_from(d).map_err(|_| io::Error::other(format!("bad dimension {d}")))?;
        if *self.dim.get_or_insert(d) != d {
            return Err(io::Error::other(format!("record of dimension {d} after {:?}", self.dim)));
        }
        let mut bytes = vec![0u8; 4 * d];
        self.reader.read_exact(&mut bytes)?;
        Ok(Some(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()))
    }
}

fn read_all(path: &PathBuf, limit: Option<usize>) -> io::Result<Vec<Vec<f32>>> {
    let mut file = Fvecs::open(path)?;
    let mut rows = Vec::new();
    while limit.is_none_or(|n| rows.len() < n) {
        match file.next_record()? {
            Some(row) => rows.push(row),
            None => break,
        }
    }
    Ok(rows)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

fn run(args: &Args) -> io::Result<String> {
    let db = VectorDB::new();
    let mut base = Fvecs::open(&args.base)?;
    let (mut n_base, mut load_seconds) = (0usize, 0.0f64);
    // A few base vectors to trigger the build and warm up with (never the timed queries).
    let mut warm: Vec<Vec<f32>> = Vec::new();
    loop {
        let mut batch = Vec::with_capacity(args.batch_size);
        while batch.len() < args.batch_size {
            match base.next_record()? {
                Some(v) => {
                    if warm.len() <= args.warmup {
                        warm.push(v.clone());
                    }
                    batch.push(((n_base + batch.len()) as u64, v));
                }
                None => break,
            }
        }
        if batch.is_empty() {
            break;
        }
        let sent = batch.len();
        let t = Instant::now();
        let inserted = db.bulk_insert(batch);
        load_seconds += t.elapsed().as_secs_f64();
        if inserted != sent {
            return Err(io::Error::other(format!("bulk_insert took {inserted} of {sent} vectors")));
        }
        n_base += sent;
    }
    if warm.is_empty() {
        return Err(io::Error::other("the base file holds no vector"));
    }

    let t = Instant::now();
    let first = db.search(&warm[0], args.k);
    let build_seconds = t.elapsed().as_secs_f64();
    if first.is_empty() {
        return Err(io::Error::other("the first search returned nothing"));
    }
    for v in warm.iter().skip(1) {
        std::hint::black_box(db.search(v, args.k));
    }

    let queries = read_all(&args.queries, args.max_queries)?;
    let k = args.k as usize;
    // The fastest of `repeats` passes counts (on a shared machine the slower ones measure the
    // neighbours); the ids of every pass are the same, the last pass's are written.
    let mut ids = vec![-1i64; queries.len() * k];
    let (mut latencies, mut search_seconds) = (Vec::new(), f64::INFINITY);
    for _ in 0..args.repeats {
        let mut pass = Vec::with_capacity(queries.len());
        let started = Instant::now();
        for (i, q) in queries.iter().enumerate() {
            let t = Instant::now();
            let results = db.search(q, args.k);
            pass.push(t.elapsed().as_secs_f64());
            for (slot, r) in ids[i * k..(i + 1) * k].iter_mut().zip(&results) {
                *slot = r.id as i64;
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        if seconds < search_seconds {
            (latencies, search_seconds) = (pass, seconds);
        }
    }

    let mut out = BufWriter::new(File::create(&args.out)?);
    for id in &ids {
        out.write_all(&id.to_le_bytes())?;
    }
    out.flush()?;

    latencies.sort_by(f64::total_cmp);
    let n = queries.len();
    Ok(format!(
        "{{\"stage_dir\": {:?}, \"n_base\": {n_base}, \"dim\": {}, \"queries\": {n}, \"k\": {k}, \
         \"batch_size\": {}, \"warmup_queries\": {}, \"repeats\": {}, \"load_seconds\": {load_seconds:.6}, \
         \"build_seconds\": {build_seconds:.6}, \"search_seconds\": {search_seconds:.6}, \
         \"qps\": {:.3}, \"p50_us\": {:.3}, \"p99_us\": {:.3}}}",
        STAGE_DIR,
        warm[0].len(),
        args.batch_size,
        warm.len() - 1,
        args.repeats,
        if search_seconds > 0.0 { n as f64 / search_seconds } else { 0.0 },
        percentile(&latencies, 50.0) * 1e6,
        percentile(&latencies, 99.0) * 1e6,
    ))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
