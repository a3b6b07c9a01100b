//! An inverted-file index over one-byte codes: k-means centroids, and per
//! centroid the rows nearest to it with their u8 codes stored contiguously.
//! A search prescores codes, then reranks a short list with exact f32 distances.

use super::kmeans::{kmeans, nearest, Rng};
use super::quant::Quantizer;
use super::topk::TopK;
use super::Store;
use crate::distance::{l2_squared_codes_rows, l2_squared_rows};

pub struct Params {
    pub lists_per_sqrt_n: f64,
    pub sample_per_list: usize,
    pub kmeans_iters: usize,
}

#[derive(Default)]
struct List {
    rows: Vec<u32>,
    codes: Vec<u8>,
}

pub struct Ivf {
    dim: usize,
    centroids: Vec<f32>,
    quantizer: Quantizer,
    /// Every filed vector's codes are exact (integer data such as SIFT).
    lossless: bool,
    lists: Vec<List>,
    /// Rows stored when the index was built: the caller rebuilds once the store
    /// has grown well past it, since the centroids then describe old data.
    pub built_rows: usize,
}

/// Hints the CPU to load `data` into cache.
fn prefetch(data: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in data.chunks(16) {
        // SAFETY: prefetching has no side effects and cannot fault.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr().cast()) };
    }
}

impl Ivf {
    /// Trains centroids and the quantizer on a sample of the live rows, then
    /// files every live row.
    pub fn build(store: &Store, p: &Params) -> Ivf {
        let dim = store.dim;
        let mut live: Vec<u32> = (0..store.ids.len() as u32).filter(|&r| store.alive[r as usize]).collect();
        let nlist = ((live.len() as f64).sqrt() * p.lists_per_sqrt_n).round().max(1.0) as usize;
        let mut rng = Rng::new(0x5EED);
        let sample_rows = rng.sample(&mut live, nlist * p.sample_per_list);
        let sample: Vec<f32> = sample_rows.iter().flat_map(|&r| store.row(r).iter().copied()).collect();
        let centroids = kmeans(&sample, dim, nlist, p.kmeans_iters, &mut rng);

        let mut ivf = Ivf {
            dim,
            lists: (0..centroids.len() / dim).map(|_| List::default()).collect(),
            centroids,
            quantizer: Quantizer::fit(&sample, dim),
            lossless: true,
            built_rows: store.ids.len(),
        };
        live.sort_unstable(); // file rows in insertion order
        for r in live {
            ivf.add(r, store.row(r));
        }
        ivf.drop_empty_lists();
        ivf
    }

    /// Removes the lists that received no vector (duplicate centroids, on
    /// degenerate data): a probe spent on one would find nothing.
    fn drop_empty_lists(&mut self) {
        let dim = self.dim;
        let mut centroids = Vec::with_capacity(self.centroids.len());
        for (c, list) in self.lists.iter().enumerate() {
            if !list.rows.is_empty() {
                centroids.extend_from_slice(&self.centroids[c * dim..(c + 1) * dim]);
            }
        }
        self.centroids = centroids;
        self.lists.retain(|l| !l.rows.is_empty());
    }

    /// Files one row in the list of its nearest centroid.
    pub fn add(&mut self, row: u32, vector: &[f32]) {
        let (c, _) = nearest(vector, &self.centroids, &mut Vec::new());
        let list = &mut self.lists[c];
        list.rows.push(row);
        self.lossless &= self.quantizer.encode(vector, &mut list.codes);
    }

    /// Prescores the codes of the `nprobe` lists nearest to `query`, keeps the
    /// best `rerank` (at least k), and ranks those by exact f32 distance. When
    /// the query and all codes are exact, code distances are true distances:
    /// the best k suffice.
    pub fn search(&self, query: &[f32], nprobe: usize, rerank: usize, store: &Store, top: &mut TopK) {
        debug_assert_eq!(self.dim, query.len());
        let mut dists = vec![0.0f32; self.lists.len()];
        l2_squared_rows(query, &self.centroids, &mut dists);
        let mut order: Vec<(f32, u32)> = dists.iter().enumerate().map(|(c, &d)| (d, c as u32)).collect();
        let nprobe = nprobe.clamp(1, order.len());
        order.select_nth_unstable_by(nprobe - 1, |a, b| a.0.total_cmp(&b.0));

        let (code, exact) = self.quantizer.encode_query(query);
        let rerank = if exact && self.lossless { top.k() } else { rerank.max(top.k()) };
        let mut short = TopK::new(rerank);
        let mut buf = Vec::new();
        for &(_, c) in &order[..nprobe] {
            let list = &self.lists[c as usize];
            buf.resize(list.rows.len(), 0);
            l2_squared_codes_rows(&code, &list.codes, &mut buf);
            for (&d, &row) in buf.iter().zip(&list.rows) {
                // Integer code distances: exact in f32 up to 2^24 (128 dims of
                // 0..=255 reach 8.3M), rounded by under 1e-7 relative beyond.
                let d = d as f32;
                if d <= short.bound && store.alive[row as usize] {
                    short.push(d, row);
                }
            }
        }

        let short = short.into_sorted();
        // The rows are scattered over the store: request them all from memory
        // first, so that their cache misses overlap instead of queueing.
        for hit in &short {
            prefetch(store.row(hit.row));
        }
        let mut d = [0.0f32];
        for hit in short {
            l2_squared_rows(query, store.row(hit.row), &mut d);
            top.push(d[0], hit.row);
        }
    }
}
