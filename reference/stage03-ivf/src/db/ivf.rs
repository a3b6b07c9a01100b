//! An inverted-file index: k-means centroids, and per centroid a list of the
//! rows nearest to it, their vectors copied contiguously so a probe is one
//! linear scan.

use super::kmeans::{kmeans, nearest, Rng};
use super::topk::TopK;
use super::Store;
use crate::distance::l2_squared_rows;

pub struct Params {
    pub lists_per_sqrt_n: f64,
    pub sample_per_list: usize,
    pub kmeans_iters: usize,
}

#[derive(Default)]
struct List {
    rows: Vec<u32>,
    vectors: Vec<f32>,
}

pub struct Ivf {
    dim: usize,
    centroids: Vec<f32>,
    lists: Vec<List>,
    /// Rows stored when the index was built: the caller rebuilds once the store
    /// has grown well past it, since the centroids then describe old data.
    pub built_rows: usize,
}

impl Ivf {
    /// Trains centroids on a sample of the live rows, then files every live row.
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
            built_rows: store.ids.len(),
        };
        live.sort_unstable(); // file rows in insertion order: lists scan memory forwards
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
        list.vectors.extend_from_slice(vector);
    }

    /// Scans the `nprobe` lists whose centroids are nearest to `query`.
    pub fn search(&self, query: &[f32], nprobe: usize, store: &Store, top: &mut TopK) {
        let mut dists = vec![0.0f32; self.lists.len()];
        l2_squared_rows(query, &self.centroids, &mut dists);
        let mut order: Vec<(f32, u32)> = dists.iter().enumerate().map(|(c, &d)| (d, c as u32)).collect();
        let nprobe = nprobe.clamp(1, order.len());
        order.select_nth_unstable_by(nprobe - 1, |a, b| a.0.total_cmp(&b.0));

        let mut buf = Vec::new();
        for &(_, c) in &order[..nprobe] {
            let list = &self.lists[c as usize];
            buf.resize(list.rows.len(), 0.0);
            l2_squared_rows(query, &list.vectors, &mut buf);
            for (&d, &row) in buf.iter().zip(&list.rows) {
                if d <= top.bound && store.alive[row as usize] {
                    top.push(d, row);
                }
            }
        }
        debug_assert_eq!(self.dim, query.len());
    }
}
