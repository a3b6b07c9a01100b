//! The k best candidates of a scan.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A scored row, ordered by (distance, row) so the heap's top is the worst kept
/// and ties resolve deterministically.
#[derive(Clone, Copy, PartialEq)]
pub struct Hit {
    pub dist: f32,
    pub row: u32,
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

/// A bounded max-heap; `bound` lets a scan reject most rows with one compare.
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Hit>,
    pub bound: f32,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
            bound: f32::INFINITY,
        }
    }

    pub fn push(&mut self, dist: f32, row: u32) {
        self.heap.push(Hit { dist, row });
        if self.heap.len() > self.k {
            self.heap.pop();
        }
        if self.heap.len() == self.k {
            self.bound = self.heap.peek().map_or(f32::INFINITY, |h| h.dist);
        }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Nearest first.
    pub fn into_sorted(self) -> Vec<Hit> {
        self.heap.into_sorted_vec()
    }
}
