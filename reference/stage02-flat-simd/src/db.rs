//! Stage 2: compact storage and a vectorized exact scan.
//!
//! All vectors live in one contiguous `Vec<f32>` (row-major), so a search
//! streams memory linearly through a SIMD kernel instead of chasing one heap
//! allocation per vector. Still exact: recall 1.0, cost O(n * dim) per query,
//! one thread per query (the server's threads serve requests concurrently).
//!
//! Ids are upserted: inserting an id again replaces its vector (the old row is
//! marked dead), so a search never returns an id twice.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{PoisonError, RwLock};

use crate::api::*;
use crate::distance::l2_squared_rows;

/// Rows scored per kernel call: small enough that the distances stay in L1.
const BLOCK_ROWS: usize = 256;

pub struct VectorDB {
    store: RwLock<Store>,
}

#[derive(Default)]
struct Store {
    /// Fixed by the first vector; vectors of another length are refused.
    dim: usize,
    ids: Vec<u64>,
    /// Row-major, `ids.len() * dim` values.
    data: Vec<f32>,
    alive: Vec<bool>,
    row_of: HashMap<u64, u32>,
}

impl Store {
    fn push(&mut self, id: u64, vector: &[f32]) -> bool {
        if self.ids.is_empty() && self.dim == 0 {
            self.dim = vector.len();
        }
        if vector.len() != self.dim || vector.is_empty() {
            return false;
        }
        let row = self.ids.len() as u32;
        if let Some(old) = self.row_of.insert(id, row) {
            self.alive[old as usize] = false;
        }
        self.ids.push(id);
        self.data.extend_from_slice(vector);
        self.alive.push(true);
        true
    }

    fn live(&self) -> usize {
        self.row_of.len()
    }
}

/// A scored row, ordered by (distance, row) so the heap's top is the worst kept.
#[derive(Clone, Copy, PartialEq)]
struct Hit {
    dist: f32,
    row: u32,
}

impl Eq for Hit {}

impl Ord for Hit {
    fn cmp(&self, other: &Self) -> Ordering {
        self.dist.total_cmp(&other.dist).then(self.row.cmp(&other.row))
    }
}

impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The k best rows seen so far; `bound` lets the scan reject most rows with one compare.
struct TopK {
    k: usize,
    heap: BinaryHeap<Hit>,
    bound: f32,
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK { k, heap: BinaryHeap::with_capacity(k + 1), bound: f32::INFINITY }
    }

    fn push(&mut self, dist: f32, row: u32) {
        self.heap.push(Hit { dist, row });
        if self.heap.len() > self.k {
            self.heap.pop();
        }
        if self.heap.len() == self.k {
            self.bound = self.heap.peek().map_or(f32::INFINITY, |h| h.dist);
        }
    }

    fn into_sorted(self) -> Vec<Hit> {
        self.heap.into_sorted_vec()
    }
}

impl VectorDB {
    pub fn new() -> Self {
        VectorDB { store: RwLock::new(Store::default()) }
    }

    pub fn insert(&self, id: u64, vector: Vec<f32>) {
        // A panic elsewhere must not make the store unusable, hence into_inner.
        self.store.write().unwrap_or_else(PoisonError::into_inner).push(id, &vector);
    }

    pub fn bulk_insert(&self, vectors: Vec<(u64, Vec<f32>)>) -> usize {
        let mut store = self.store.write().unwrap_or_else(PoisonError::into_inner);
        vectors.iter().filter(|(id, v)| store.push(*id, v)).count()
    }

    pub fn search(&self, vector: &[f32], top_k: u32) -> Vec<SearchResult> {
        let store = self.store.read().unwrap_or_else(PoisonError::into_inner);
        let k = (top_k as usize).min(store.live());
        if k == 0 || vector.len() != store.dim {
            return Vec::new();
        }
        let mut top = TopK::new(k);
        let mut dists = [0.0f32; BLOCK_ROWS];
        for (b, block) in store.data.chunks(BLOCK_ROWS * store.dim).enumerate() {
            let rows = block.len() / store.dim;
            l2_squared_rows(vector, block, &mut dists[..rows]);
            for (i, &d) in dists[..rows].iter().enumerate() {
                let row = b * BLOCK_ROWS + i;
                // `<=` keeps equal distances competing on row order, as the heap does.
                if d <= top.bound && store.alive[row] {
                    top.push(d, row as u32);
                }
            }
        }
        top.into_sorted()
            .into_iter()
            .map(|h| SearchResult { id: store.ids[h.row as usize], distance: f64::from(h.dist).sqrt() })
            .collect()
    }
}
