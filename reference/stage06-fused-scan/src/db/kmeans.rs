//! Lloyd's k-means on a sample, and nearest-centroid lookup.

use crate::distance::l2_squared_rows;

/// A small deterministic generator (SplitMix64): the index must not depend on
/// anything but the data, so that two runs build the same lists.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `m` distinct values of `items`, in random order (partial Fisher-Yates).
    pub fn sample<T: Copy>(&mut self, items: &mut [T], m: usize) -> Vec<T> {
        let m = m.min(items.len());
        for i in 0..m {
            let j = i + self.below(items.len() - i);
            items.swap(i, j);
        }
        items[..m].to_vec()
    }
}

/// The nearest of the `dim`-sized rows of `centroids` to `point`: (index, squared distance).
/// `scratch` is reused across calls to avoid an allocation per point.
pub fn nearest(point: &[f32], centroids: &[f32], scratch: &mut Vec<f32>) -> (usize, f32) {
    let k = centroids.len() / point.len();
    scratch.resize(k, 0.0);
    l2_squared_rows(point, centroids, scratch);
    let mut best = (0, f32::INFINITY);
    for (c, &d) in scratch.iter().enumerate() {
        if d < best.1 {
            best = (c, d);
        }
    }
    best
}

/// `k` centroids of the `dim`-sized rows of `points` after `iters` Lloyd rounds,
/// started from `k` distinct random points. Returns fewer than `k` centroids
/// only when there are fewer points.
pub fn kmeans(points: &[f32], dim: usize, k: usize, iters: usize, rng: &mut Rng) -> Vec<f32> {
    let n = points.len() / dim;
    let k = k.min(n);
    if k == 0 {
        return Vec::new();
    }
    let row = |i: usize| &points[i * dim..(i + 1) * dim];
    let mut order: Vec<usize> = (0..n).collect();
    let mut centroids: Vec<f32> = rng
        .sample(&mut order, k)
        .into_iter()
        .flat_map(|i| row(i).to_vec())
        .collect();

    let mut assign = vec![0usize; n];
    for _ in 0..iters {
        parallel_chunks(&mut assign, 1024, |start, out| {
            let mut scratch = Vec::new();
            for (i, a) in out.iter_mut().enumerate() {
                *a = nearest(row(start + i), &centroids, &mut scratch).0;
            }
        });
        // Means in f64: a list of thousands of 0..255 values loses digits in f32.
        let mut sums = vec![0.0f64; k * dim];
        let mut counts = vec![0usize; k];
        for (i, &c) in assign.iter().enumerate() {
            counts[c] += 1;
            for (s, &x) in sums[c * dim..(c + 1) * dim].iter_mut().zip(row(i)) {
                *s += f64::from(x);
            }
        }
        let largest = (0..k).max_by_key(|&c| counts[c]).unwrap_or(0);
        for c in 0..k {
            let dst = &mut centroids[c * dim..(c + 1) * dim];
            if counts[c] > 0 {
                for (d, s) in dst.iter_mut().zip(&sums[c * dim..(c + 1) * dim]) {
                    *d = (*s / counts[c] as f64) as f32;
                }
            } else {
                // An empty cluster restarts on a random member of the largest one,
                // which splits it in the next round.
                let members: Vec<usize> = (0..n).filter(|&i| assign[i] == largest).collect();
                dst.copy_from_slice(row(members[rng.below(members.len())]));
            }
        }
    }
    centroids
}

/// Runs `work(start, chunk)` over `out` cut into chunks of `chunk` items, on as
/// many threads as the process may use (its CPU affinity and cgroup quota): the
/// index build uses every CPU the server was given. Each chunk is written by one
/// thread and the results do not depend on the number of threads.
pub fn parallel_chunks<T: Send>(out: &mut [T], chunk: usize, work: impl Fn(usize, &mut [T]) + Sync) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunks = out.len().div_ceil(chunk.max(1));
    if threads <= 1 || chunks <= 1 {
        work(0, out);
        return;
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let parts: Vec<std::sync::Mutex<Option<(usize, &mut [T])>>> = out
        .chunks_mut(chunk.max(1))
        .enumerate()
        .map(|(i, c)| std::sync::Mutex::new(Some((i * chunk.max(1), c))))
        .collect();
    std::thread::scope(|scope| {
        for _ in 0..threads.min(chunks) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(part) = parts.get(i) else { break };
                let taken = part.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
                if let Some((start, c)) = taken {
                    work(start, c);
                }
            });
        }
    });
}
