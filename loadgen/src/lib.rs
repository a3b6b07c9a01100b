//! staircase's load generator: bulk-loads a vector-DB server, drives it with closed-loop
//! queries, validates every response and records latency. Shared by the `loadgen` binary
//! (used by the scorer) and `devbench` (run by the agent inside its sandbox).

pub mod body;
pub mod client;
pub mod load;
pub mod query;
pub mod trivial;
pub mod validate;
pub mod vecs;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use bytes::Bytes;

/// A tokio runtime: single-threaded (the default: one core drives 20K+ req/s) or with
/// `threads` workers.
pub fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

/// Resolves HOST:PORT to its first socket address.
pub async fn resolve(addr: &str) -> Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("cannot resolve {addr:?} (expected HOST:PORT)"))?
        .next()
        .with_context(|| format!("{addr:?} resolves to no address"))
}

/// The /search request body of every row of `queries`.
pub fn search_bodies(queries: &vecs::Matrix<f32>, top_k: u32) -> Vec<Bytes> {
    (0..queries.rows)
        .map(|i| body::search_body(queries.row(i), top_k))
        .collect()
}

/// Writes `value` as pretty JSON, atomically (temp file + rename) so a reader never sees
/// half a file.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(value)?;
    text.push(b'\n');
    write_atomic(path, &text)
}

/// Writes `bytes` to `path` through a temp file in the same folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}
