//! Bulk insert of the base vectors: batches to POST /bulk_insert, sent one after another on
//! one keep-alive connection, ids = row index. A reader thread reads and serializes the next
//! batches while the server works on the current one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::body::bulk_insert_body;
use crate::client::Client;
use crate::validate::lossy_prefix;
use crate::vecs::VecsReader;

pub struct LoadPlan {
    pub addr: SocketAddr,
    pub base: PathBuf,
    pub batch_size: usize,
    pub limit: Option<usize>,
    pub time_limit: Option<Duration>,
    pub request_timeout: Duration,
    pub max_body: usize,
}

/// The stats.json of `loadgen load`.
#[derive(Debug, Serialize)]
pub struct LoadStats {
    pub ok: bool,
    pub vectors: u64,
    pub batches: u64,
    pub elapsed_s: f64,
    pub error: Option<String>,
}

struct Batch {
    first_id: u64,
    count: usize,
    body: Bytes,
}

#[derive(Deserialize)]
struct BulkResponse {
    inserted: Option<u64>,
}

/// Reads `plan.base` on a thread and hands serialized batches over a small channel.
fn spawn_reader(plan: &LoadPlan) -> tokio::sync::mpsc::Receiver<Result<Batch>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let (path, batch_size, limit) = (plan.base.clone(), plan.batch_size.max(1), plan.limit);
    std::thread::spawn(move || {
        let send_batches = || -> Result<()> {
            let mut reader = VecsReader::open(&path)?;
            let mut next_id = 0u64;
            let mut values = Vec::new();
            let mut body_capacity = 0;
            loop {
                values.clear();
                let mut count = 0;
                while count < batch_size
                    && limit.is_none_or(|l| (next_id as usize + count) < l)
                    && reader.next_f32(&mut values)?
                {
                    count += 1;
                }
                if count == 0 {
                    if next_id == 0 {
                        anyhow::bail!("{}: no vectors to load", path.display());
                    }
                    return Ok(());
                }
                let dim = reader.dim().expect("a record was read");
                let mut body = Vec::with_capacity(body_capacity);
                bulk_insert_body(&mut body, next_id, dim, &values);
                body_capacity = body.len();
                let batch = Batch {
                    first_id: next_id,
                    count,
                    body: Bytes::from(body),
                };
                next_id += count as u64;
                if tx.blocking_send(Ok(batch)).is_err() {
                    return Ok(()); // the sender stopped early
                }
            }
        };
        if let Err(e) = send_batches() {
            let _ = tx.blocking_send(Err(e));
        }
    });
    rx
}

/// Loads the base vectors. Server-side failures (and the time limit) end the load with
/// `ok: false` and a one-sentence reason; only our own errors (unreadable base file) are Err.
pub async fn run_load(plan: &LoadPlan) -> Result<LoadStats> {
    let start = Instant::now();
    let deadline = plan.time_limit.map(|t| start + t);
    let mut batches_rx = spawn_reader(plan);
    let mut client = Client::new(plan.addr);
    let mut buf = Vec::new();
    let mut stats = LoadStats {
        ok: true,
        vectors: 0,
        batches: 0,
        elapsed_s: 0.0,
        error: None,
    };
    while let Some(batch) = batches_rx.recv().await {
        let batch = batch.context("reading the base vectors")?;
        if let Err(reason) = send_batch(plan, deadline, &mut client, &batch, &mut buf).await {
            stats.ok = false;
            stats.error = Some(format!(
                "batch {} (ids {}..{}): {reason}",
                stats.batches,
                batch.first_id,
                batch.first_id + batch.count as u64 - 1
            ));
            break;
        }
        stats.vectors += batch.count as u64;
        stats.batches += 1;
    }
    stats.elapsed_s = start.elapsed().as_secs_f64();
    Ok(stats)
}

async fn send_batch(
    plan: &LoadPlan,
    deadline: Option<Instant>,
    client: &mut Client,
    batch: &Batch,
    buf: &mut Vec<u8>,
) -> Result<(), String> {
    let now = Instant::now();
    let left = deadline.map_or(plan.request_timeout, |d| d.saturating_duration_since(now));
    let time_limit_reached = || {
        format!(
            "load time limit of {} s reached",
            plan.time_limit.unwrap_or_default().as_secs_f64()
        )
    };
    if left.is_zero() {
        return Err(time_limit_reached());
    }
    let exchange = async {
        if !client.ready().await {
            client
                .connect()
                .await
                .map_err(|e| format!("connect to {}: {e}", plan.addr))?;
        }
        client
            .post("/bulk_insert", &batch.body, plan.max_body, buf)
            .await
            .map_err(|f| f.detail)
    };
    let status = match tokio::time::timeout(left.min(plan.request_timeout), exchange).await {
        Ok(result) => result?,
        Err(_) => {
            client.disconnect();
            return Err(if left < plan.request_timeout {
                time_limit_reached()
            } else {
                format!(
                    "no response within {} s",
                    plan.request_timeout.as_secs_f64()
                )
            });
        }
    };
    if status != 200 {
        return Err(format!("HTTP {status}: {}", lossy_prefix(buf, 200)));
    }
    match serde_json::from_slice::<BulkResponse>(buf) {
        Ok(BulkResponse { inserted: Some(n) }) if n == batch.count as u64 => Ok(()),
        Ok(BulkResponse { inserted: Some(n) }) => Err(format!(
            "server reported inserted={n} for {} vectors",
            batch.count
        )),
        Ok(BulkResponse { inserted: None }) => Err(format!(
            "response has no \"inserted\" count: {}",
            lossy_prefix(buf, 200)
        )),
        Err(e) => Err(format!(
            "response is not valid JSON ({e}): {}",
            lossy_prefix(buf, 200)
        )),
    }
}
