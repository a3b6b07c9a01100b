//! Stage 6: routing in codes, a fused scan that leaves rows half way, exact filing.
//!
//! Stage 5 streamed about 9,000 codes per query at 1M vectors from memory for
//! recall 0.97, mostly because vectors near a border were filed in the wrong
//! list: a vector looked for its nearest fine centroid under only the 3
//! nearest super-clusters. Filing now searches `ASSIGN_SUPERS = 8` of them
//! (build +4 s at 1M), and the same recall needs far fewer lists, so the
//! pruning is harder (`PRUNE_RATIO = 1.6`). The scan (`ivf.rs`) also changed:
//! fine centroids are scored as u8 codes, a list's scan is fused with the
//! candidate test and stops a row half way once its partial distance passes
//! the k-th best (85% of rows; codes store the components by decreasing
//! variance so the partial sum grows fast), and the next list is prefetched.
//! The build runs on every CPU the server was given (`kmeans::parallel_chunks`);
//! searches already run one per tokio worker, one worker per CPU.
//!
//! The index is built lazily by the first search after a load (the benchmark's
//! warm-up absorbs it), never per insert batch. Vectors inserted after a build
//! join the list of their nearest centroid; once the store has grown past
//! `REBUILD_GROWTH` times its size at build time, the index is dropped and the
//! next search rebuilds it. Small stores are scanned exactly.

mod ivf;
mod kmeans;
mod quant;
mod topk;

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use crate::api::*;
use crate::distance::l2_squared_rows;
use ivf::{BuildParams, Ivf, SearchParams};
use topk::TopK;

/// Most fine lists scanned per query: the main recall/speed knob.
const NPROBE: usize = 64;
/// Super-clusters whose fine centroids are scored per query.
const SUPER_PROBE: usize = 10;
/// Skip lists whose centroid is farther than this (squared) ratio of the nearest...
const PRUNE_RATIO: f32 = 1.6;
/// ...but always scan this many (a query on a centroid would prune everything).
const MIN_PROBE: usize = 4;
/// ...and lists until at least this many vectors are scanned (small stores).
const MIN_SCAN: usize = 2048;
/// Candidates ranked again with exact f32 distances (at least top_k).
const RERANK: usize = 40;
/// nlist = LISTS_PER_SQRT_N * sqrt(n); super-clusters = sqrt(nlist).
const LISTS_PER_SQRT_N: f64 = 3.0;
/// k-means trains on nlist * SAMPLE_PER_LIST sampled vectors.
const SAMPLE_PER_LIST: usize = 32;
const KMEANS_ITERS: usize = 6;
/// Super-clusters searched for the nearest fine centroid when filing a vector.
const ASSIGN_SUPERS: usize = 8;
/// Below this many vectors an exact scan is as fast as an index.
const MIN_INDEXED_ROWS: usize = 1024;
/// Rebuild once the store holds this many times the rows indexed at build.
const REBUILD_GROWTH: usize = 2;
/// Rows scored per kernel call in an exact scan.
const BLOCK_ROWS: usize = 256;

const BUILD: BuildParams = BuildParams {
    lists_per_sqrt_n: LISTS_PER_SQRT_N,
    sample_per_list: SAMPLE_PER_LIST,
    kmeans_iters: KMEANS_ITERS,
    assign_supers: ASSIGN_SUPERS,
};

const SEARCH: SearchParams = SearchParams {
    super_probe: SUPER_PROBE,
    nprobe: NPROBE,
    prune_ratio: PRUNE_RATIO,
    min_probe: MIN_PROBE,
    min_scan: MIN_SCAN,
    rerank: RERANK,
};

pub struct VectorDB {
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    store: Store,
    /// When present, covers every live row of `store`.
    index: Option<Ivf>,
}

/// Every vector ever inserted, row-major; the source the index is built from.
#[derive(Default)]
pub struct Store {
    /// Fixed by the first vector; vectors of another length are refused.
    pub dim: usize,
    pub ids: Vec<u64>,
    data: Vec<f32>,
    /// False for a row whose id was inserted again later (ids are upserted).
    pub alive: Vec<bool>,
    row_of: HashMap<u64, u32>,
}

impl Store {
    fn push(&mut self, id: u64, vector: &[f32]) -> Option<u32> {
        if self.ids.is_empty() && self.dim == 0 {
            self.dim = vector.len();
        }
        if vector.len() != self.dim || vector.is_empty() {
            return None;
        }
        let row = self.ids.len() as u32;
        if let Some(old) = self.row_of.insert(id, row) {
            self.alive[old as usize] = false;
        }
        self.ids.push(id);
        self.data.extend_from_slice(vector);
        self.alive.push(true);
        Some(row)
    }

    pub fn row(&self, r: u32) -> &[f32] {
        let start = r as usize * self.dim;
        &self.data[start..start + self.dim]
    }

    fn live(&self) -> usize {
        self.row_of.len()
    }

    fn exact_search(&self, query: &[f32], top: &mut TopK) {
        let mut dists = [0.0f32; BLOCK_ROWS];
        for (b, block) in self.data.chunks(BLOCK_ROWS * self.dim).enumerate() {
            let rows = block.len() / self.dim;
            l2_squared_rows(query, block, &mut dists[..rows]);
            for (i, &d) in dists[..rows].iter().enumerate() {
                let row = b * BLOCK_ROWS + i;
                if d <= top.bound && self.alive[row] {
                    top.push(d, row as u32);
                }
            }
        }
    }
}

impl State {
    fn insert(&mut self, id: u64, vector: &[f32]) -> bool {
        let Some(row) = self.store.push(id, vector) else {
            return false;
        };
        if let Some(index) = &mut self.index {
            if self.store.ids.len() > REBUILD_GROWTH * index.built_rows {
                self.index = None;
            } else {
                index.add(row, vector);
            }
        }
        true
    }

    fn needs_index(&self) -> bool {
        self.index.is_none() && self.store.live() >= MIN_INDEXED_ROWS
    }

    fn search(&self, query: &[f32], top_k: u32) -> Vec<SearchResult> {
        let k = (top_k as usize).min(self.store.live());
        if k == 0 || query.len() != self.store.dim {
            return Vec::new();
        }
        let mut top = TopK::new(k);
        if let Some(index) = &self.index {
            index.search(query, &SEARCH, &self.store, &mut top);
        }
        // No index yet, or the probed lists held fewer than k vectors (a large
        // top_k): answer exactly, as the contract asks for k results.
        if top.len() < k {
            top = TopK::new(k);
            self.store.exact_search(query, &mut top);
        }
        top.into_sorted()
            .into_iter()
            .map(|h| SearchResult {
                id: self.store.ids[h.row as usize],
                distance: f64::from(h.dist).sqrt(),
            })
            .collect()
    }
}

impl VectorDB {
    pub fn new() -> Self {
        VectorDB {
            state: RwLock::new(State::default()),
        }
    }

    pub fn insert(&self, id: u64, vector: Vec<f32>) {
        // A panic elsewhere must not make the store unusable, hence into_inner.
        self.state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, &vector);
    }

    pub fn bulk_insert(&self, vectors: Vec<(u64, Vec<f32>)>) -> usize {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        vectors.iter().filter(|(id, v)| state.insert(*id, v)).count()
    }

    pub fn search(&self, vector: &[f32], top_k: u32) -> Vec<SearchResult> {
        {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            if !state.needs_index() {
                return state.search(vector, top_k);
            }
        }
        // First search since a load: build under the write lock (concurrent
        // searches wait for it), then answer with the lock still held.
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if state.needs_index() {
            state.index = Some(Ivf::build(&state.store, &BUILD));
        }
        state.search(vector, top_k)
    }
}
