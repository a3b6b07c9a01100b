//! A two-level inverted file over one-byte codes, routed and scanned in codes.
//!
//! Fine lists (k-means on a sample, about 2 sqrt(n) of them) are grouped under
//! super-clusters (k-means over the fine centroids, about sqrt(nlist)). Filing
//! a vector and routing a query both score the super-clusters first, then only
//! the fine centroids of the nearest few: filing the whole store stays cheap
//! however many lists there are. A query probes the nearest fine lists, pruning
//! those whose centroid is much farther than the nearest one.
//!
//! Stage 6 over stage 5: the fine centroids are scored as u8 codes against the
//! query's codes (a quarter of the bytes of f32 centroids, the integer kernel);
//! the scan of a list is fused with the candidate test and leaves a row half
//! way once its partial distance exceeds the current k-th best (most rows);
//! the next list is requested from memory while one is scanned; and the build
//! files vectors on every CPU the process may use.

use super::kmeans::{kmeans, parallel_chunks, Rng};
use super::quant::Quantizer;
use super::topk::TopK;
use super::Store;
use crate::distance::{l2_squared_codes_rows, l2_squared_rows, scan_codes_bounded};

pub struct BuildParams {
    pub lists_per_sqrt_n: f64,
    pub sample_per_list: usize,
    pub kmeans_iters: usize,
    /// A vector is filed under the nearest fine centroid of this many nearest
    /// super-clusters (1 would misfile many vectors near a border).
    pub assign_supers: usize,
}

pub struct SearchParams {
    /// Super-clusters whose fine centroids are scored.
    pub super_probe: usize,
    /// Most fine lists scanned.
    pub nprobe: usize,
    /// Beyond the first `min_probe` lists, a list is scanned only if its
    /// centroid's squared distance is at most `prune_ratio` times the nearest
    /// centroid's.
    pub prune_ratio: f32,
    pub min_probe: usize,
    /// ...and lists until this many vectors are scanned: on a small store the
    /// lists are short, and the ratio alone would scan too few for the recall.
    pub min_scan: usize,
    /// Candidates ranked again with exact f32 distances (at least top_k).
    pub rerank: usize,
}

#[derive(Default)]
struct List {
    rows: Vec<u32>,
    codes: Vec<u8>,
}

pub struct Ivf {
    dim: usize,
    supers: Vec<f32>,
    /// Fine centroids, grouped by super-cluster: super `s` owns `spans[s]`.
    centroids: Vec<f32>,
    /// The same centroids as u8 codes (lossy: means are not integers), for routing.
    centroid_codes: Vec<u8>,
    spans: Vec<std::ops::Range<usize>>,
    quantizer: Quantizer,
    /// Every filed vector's codes are exact (integer data such as SIFT).
    lossless: bool,
    lists: Vec<List>,
    assign_supers: usize,
    /// Rows stored when the index was built: the caller rebuilds once the store
    /// has grown well past it, since the centroids then describe old data.
    pub built_rows: usize,
}

/// (distance, index) pairs of `dists`, the `m` smallest first (in order).
fn nearest_m(dists: &[f32], m: usize) -> Vec<(f32, u32)> {
    let mut order: Vec<(f32, u32)> = dists.iter().enumerate().map(|(i, &d)| (d, i as u32)).collect();
    let m = m.min(order.len());
    if m > 0 && m < order.len() {
        order.select_nth_unstable_by(m - 1, |a, b| a.0.total_cmp(&b.0));
    }
    order.truncate(m);
    order.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    order
}

/// Hints the CPU to load the first `lines` cache lines of `data` into cache.
fn prefetch<T>(data: &[T], lines: usize) {
    let bytes = std::mem::size_of_val(data);
    #[cfg(target_arch = "x86_64")]
    for off in (0..bytes).step_by(64).take(lines) {
        // SAFETY: prefetching has no side effects and cannot fault; off < bytes.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(data.as_ptr().cast::<i8>().add(off))
        };
    }
}

impl Ivf {
    /// Trains the fine centroids and the quantizer on a sample of the live
    /// rows, groups the centroids under super-clusters, then files every live row.
    pub fn build(store: &Store, p: &BuildParams) -> Ivf {
        let dim = store.dim;
        let mut live: Vec<u32> = (0..store.ids.len() as u32)
            .filter(|&r| store.alive[r as usize])
            .collect();
        let nlist = ((live.len() as f64).sqrt() * p.lists_per_sqrt_n).round().max(1.0) as usize;
        let mut rng = Rng::new(0x5EED);
        let sample_rows = rng.sample(&mut live, nlist * p.sample_per_list);
        let sample: Vec<f32> = sample_rows.iter().flat_map(|&r| store.row(r).iter().copied()).collect();
        // Flat k-means for the lists: training supers first and splitting each
        // (top-down) was faster but its lists were 25% worse in squared error,
        // which cost several points of recall at the same scan length.
        let flat = kmeans(&sample, dim, nlist, p.kmeans_iters, &mut rng);
        let nfine = flat.len() / dim;
        let nsuper = (nfine as f64).sqrt().round().max(1.0) as usize;
        let supers = kmeans(&flat, dim, nsuper, p.kmeans_iters, &mut rng);

        // Store the fine centroids grouped by their nearest super-cluster.
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); supers.len() / dim];
        let mut scratch = vec![0.0f32; groups.len()];
        for (c, centroid) in flat.chunks_exact(dim).enumerate() {
            l2_squared_rows(centroid, &supers, &mut scratch);
            groups[nearest_m(&scratch, 1)[0].1 as usize].push(c);
        }
        let (mut centroids, mut spans) = (Vec::with_capacity(flat.len()), Vec::new());
        for g in &groups {
            let start = centroids.len() / dim;
            for &c in g {
                centroids.extend_from_slice(&flat[c * dim..(c + 1) * dim]);
            }
            spans.push(start..start + g.len());
        }

        let mut ivf = Ivf {
            dim,
            supers,
            lists: (0..nfine).map(|_| List::default()).collect(),
            centroids,
            centroid_codes: Vec::new(),
            spans,
            quantizer: Quantizer::fit(&sample, dim),
            lossless: true,
            assign_supers: p.assign_supers,
            built_rows: store.ids.len(),
        };
        live.sort_unstable(); // file rows in insertion order
                              // Finding each row's list is the build's longest part: done on every
                              // CPU, then filed in row order (the same lists as one thread would make).
        let mut target = vec![0u32; live.len()];
        parallel_chunks(&mut target, 4096, |start, out| {
            for (t, &r) in out.iter_mut().zip(&live[start..]) {
                *t = ivf.nearest_list(store.row(r)) as u32;
            }
        });
        for (&r, &t) in live.iter().zip(&target) {
            ivf.file(r, store.row(r), t as usize);
        }
        ivf.drop_empty_lists();
        let mut codes = Vec::with_capacity(ivf.centroids.len());
        for c in ivf.centroids.chunks_exact(dim) {
            ivf.quantizer.encode(c, &mut codes);
        }
        ivf.centroid_codes = codes;
        ivf
    }

    /// Removes the lists that received no vector (duplicate centroids, on
    /// degenerate data): a probe spent on one would find nothing.
    fn drop_empty_lists(&mut self) {
        let dim = self.dim;
        let (mut centroids, mut lists, mut spans) = (Vec::new(), Vec::new(), Vec::new());
        for span in &self.spans {
            let start = lists.len();
            for c in span.clone() {
                if !self.lists[c].rows.is_empty() {
                    centroids.extend_from_slice(&self.centroids[c * dim..(c + 1) * dim]);
                    lists.push(std::mem::take(&mut self.lists[c]));
                }
            }
            spans.push(start..lists.len());
        }
        (self.centroids, self.lists, self.spans) = (centroids, lists, spans);
    }

    /// Files one row in the list of its nearest fine centroid (searched under
    /// the `assign_supers` nearest super-clusters).
    pub fn add(&mut self, row: u32, vector: &[f32]) {
        let list = self.nearest_list(vector);
        self.file(row, vector, list);
    }

    fn file(&mut self, row: u32, vector: &[f32], list: usize) {
        let list = &mut self.lists[list];
        list.rows.push(row);
        self.lossless &= self.quantizer.encode(vector, &mut list.codes);
    }

    /// The fine list nearest to `vector` among those of its `assign_supers`
    /// nearest super-clusters.
    fn nearest_list(&self, vector: &[f32]) -> usize {
        let mut dists = vec![0.0f32; self.spans.len()];
        l2_squared_rows(vector, &self.supers, &mut dists);
        let mut best = (f32::INFINITY, 0usize);
        for (_, s) in nearest_m(&dists, self.assign_supers) {
            let span = self.spans[s as usize].clone();
            let mut fine = vec![0.0f32; span.len()];
            l2_squared_rows(
                vector,
                &self.centroids[span.start * self.dim..span.end * self.dim],
                &mut fine,
            );
            for (i, &d) in fine.iter().enumerate() {
                if d < best.0 {
                    best = (d, span.start + i);
                }
            }
        }
        best.1
    }

    /// The fine lists to scan for `query` (`code` on the quantizer's grid),
    /// nearest first. The fine centroids are compared in codes.
    fn route(&self, query: &[f32], code: &[i16], p: &SearchParams) -> Vec<u32> {
        let mut dists = vec![0.0f32; self.spans.len()];
        l2_squared_rows(query, &self.supers, &mut dists);
        let mut candidates: Vec<(f32, u32)> = Vec::new();
        let mut fine = Vec::new();
        for (_, s) in nearest_m(&dists, p.super_probe) {
            let span = self.spans[s as usize].clone();
            fine.resize(span.len(), 0u32);
            l2_squared_codes_rows(
                code,
                &self.centroid_codes[span.start * self.dim..span.end * self.dim],
                &mut fine,
            );
            candidates.extend(
                fine.iter()
                    .enumerate()
                    .map(|(i, &d)| (d as f32, (span.start + i) as u32)),
            );
        }
        let fine: Vec<f32> = candidates.iter().map(|c| c.0).collect();
        let chosen = nearest_m(&fine, p.nprobe);
        let limit = chosen.first().map_or(0.0, |c| c.0 * p.prune_ratio);
        let mut rows = 0;
        chosen
            .iter()
            .enumerate()
            .take_while(|&(i, c)| {
                let list = candidates[c.1 as usize].1 as usize;
                let keep = i < p.min_probe || c.0 <= limit || rows < p.min_scan;
                rows += self.lists[list].rows.len();
                keep
            })
            .map(|(_, c)| candidates[c.1 as usize].1)
            .collect()
    }

    /// Scans the codes of the routed lists, keeps the best `rerank` (at least
    /// k), and ranks those by exact f32 distance. When the query and all codes
    /// are exact, code distances are true distances: the best k suffice.
    pub fn search(&self, query: &[f32], p: &SearchParams, store: &Store, top: &mut TopK) {
        debug_assert_eq!(self.dim, query.len());
        let (code, exact) = self.quantizer.encode_query(query);
        let rerank = if exact && self.lossless {
            top.k()
        } else {
            p.rerank.max(top.k())
        };
        let mut short = TopK::new(rerank);
        let route = self.route(query, &code, p);
        for (i, &c) in route.iter().enumerate() {
            if let Some(&next) = route.get(i + 1) {
                // Lists are read front to back: once the first lines of the
                // next one are on their way, the hardware prefetcher follows.
                prefetch(&self.lists[next as usize].codes, 4);
            }
            let list = &self.lists[c as usize];
            // The bound in code units; the f32 bound of integer distances is
            // exact up to 2^24 (128 dims of 0..=255 reach 8.3M), rounded up beyond.
            let bound = |b: f32| if b.is_finite() { b.ceil() as u32 } else { u32::MAX };
            scan_codes_bounded(&code, &list.codes, bound(short.bound), |i, d| {
                let row = list.rows[i];
                if store.alive[row as usize] {
                    short.push(d as f32, row);
                }
                bound(short.bound)
            });
        }
        let short = short.into_sorted();
        // The rows are scattered over the store: request them all from memory
        // first, so that their cache misses overlap instead of queueing.
        for hit in &short {
            prefetch(store.row(hit.row), usize::MAX);
        }
        let mut d = [0.0f32];
        for hit in short {
            l2_squared_rows(query, store.row(hit.row), &mut d);
            top.push(d[0], hit.row);
        }
    }
}
