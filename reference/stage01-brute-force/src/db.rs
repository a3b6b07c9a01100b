//! Stage 1: exact brute force. Every search scans every stored vector, so
//! recall is 1.0 and the cost is O(n * dim) per query.
//!
//! Distances: candidates are ranked by squared L2; the k survivors are
//! reported as Euclidean distances (`sqrt`), nearest first.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{PoisonError, RwLock};

use crate::api::*;
use crate::distance::l2_squared;

pub struct VectorDB {
    vectors: RwLock<Vec<(u64, Vec<f32>)>>,
}

/// A scanned vector, ordered by (distance, id) so that the heap's maximum is
/// the worst candidate kept and ties resolve deterministically.
struct Candidate {
    dist: f32,
    id: u64,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.dist
            .total_cmp(&other.dist)
            .then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

impl VectorDB {
    pub fn new() -> Self {
        VectorDB {
            vectors: RwLock::new(Vec::new()),
        }
    }

    pub fn insert(&self, id: u64, vector: Vec<f32>) {
        // A panic elsewhere must not make the store unusable, hence into_inner.
        self.vectors
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, vector));
    }

    pub fn bulk_insert(&self, vectors: Vec<(u64, Vec<f32>)>) -> usize {
        let inserted = vectors.len();
        self.vectors
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(vectors);
        inserted
    }

    pub fn search(&self, vector: &[f32], top_k: u32) -> Vec<SearchResult> {
        let k = top_k as usize;
        if k == 0 {
            return Vec::new();
        }
        let stored = self.vectors.read().unwrap_or_else(PoisonError::into_inner);

        // Max-heap of the k best so far: a new vector replaces the worst one.
        let mut best = BinaryHeap::with_capacity(k.min(stored.len()) + 1);
        for (id, v) in stored.iter() {
            let candidate = Candidate {
                dist: l2_squared(vector, v),
                id: *id,
            };
            if best.len() < k {
                best.push(candidate);
            } else if let Some(mut worst) = best.peek_mut() {
                if candidate < *worst {
                    *worst = candidate;
                }
            }
        }

        best.into_sorted_vec()
            .into_iter()
            .map(|c| SearchResult {
                id: c.id,
                distance: f64::from(c.dist).sqrt(),
            })
            .collect()
    }
}
