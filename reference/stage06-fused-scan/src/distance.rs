//! Distance kernels over contiguous rows: f32 for exact distances, u8 codes
//! against an i16 query for routing and for the scan, which is fused with the
//! candidate test and stops a row half way once it cannot qualify.
//!
//! `Cargo.toml` cannot pass `-C target-cpu`, so plain code is compiled for the
//! x86-64 baseline (SSE2). The row scan therefore has an AVX2+FMA version,
//! chosen at run time. It is written with intrinsics: the same loop written as
//! plain Rust over 8-wide accumulator arrays was vectorized by LLVM only 2 lanes
//! wide in this context, at a third of the speed.

/// Squared Euclidean distance, portable version (also the tail of the SIMD one).
#[inline]
fn l2_squared_scalar(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Horizontal sum of the eight lanes.
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps::<1>(h, h)))
    }

    /// Squared L2 of two equal-length slices: four independent 8-wide FMA chains.
    #[target_feature(enable = "avx2,fma")]
    pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (all loads below): i + width <= n, and both slices hold n values.
        while i + 32 <= n {
            for (j, s) in acc.iter_mut().enumerate() {
                let d =
                    unsafe { _mm256_sub_ps(_mm256_loadu_ps(pa.add(i + 8 * j)), _mm256_loadu_ps(pb.add(i + 8 * j))) };
                *s = _mm256_fmadd_ps(d, d, *s);
            }
            i += 32;
        }
        while i + 8 <= n {
            let d = unsafe { _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
            acc[0] = _mm256_fmadd_ps(d, d, acc[0]);
            i += 8;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        hsum(sum) + super::l2_squared_scalar(&a[i..n], &b[i..n])
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn scan(query: &[f32], rows: &[f32], out: &mut [f32]) {
        for (row, d) in rows.chunks_exact(query.len()).zip(out.iter_mut()) {
            *d = l2_squared(query, row);
        }
    }

    /// Squared L2 between an i16 query and u8 codes: codes widened to i16,
    /// differences squared and pair-summed into i32 lanes by `madd`.
    #[target_feature(enable = "avx2,fma")]
    pub fn l2_squared_codes(query: &[i16], codes: &[u8]) -> u32 {
        let n = query.len().min(codes.len());
        let (pq, pc) = (query.as_ptr(), codes.as_ptr());
        let mut acc = [_mm256_setzero_si256(); 2];
        let mut i = 0;
        // SAFETY (all loads below): i + width <= n, and both slices hold n values.
        while i + 32 <= n {
            for (j, s) in acc.iter_mut().enumerate() {
                let o = i + 16 * j;
                let (q, c) = unsafe { (_mm256_loadu_si256(pq.add(o).cast()), _mm_loadu_si128(pc.add(o).cast())) };
                let d = _mm256_sub_epi16(q, _mm256_cvtepu8_epi16(c));
                *s = _mm256_add_epi32(*s, _mm256_madd_epi16(d, d));
            }
            i += 32;
        }
        let s = _mm256_add_epi32(acc[0], acc[1]);
        let h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
        let h = _mm_add_epi32(h, _mm_shuffle_epi32::<0b1110>(h));
        let h = _mm_add_epi32(h, _mm_shuffle_epi32::<1>(h));
        (_mm_cvtsi128_si32(h) as u32).wrapping_add(super::l2_squared_codes_scalar(&query[i..n], &codes[i..n]))
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn scan_codes(query: &[i16], codes: &[u8], out: &mut [u32]) {
        for (row, d) in codes.chunks_exact(query.len()).zip(out.iter_mut()) {
            *d = l2_squared_codes(query, row);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    fn hsum_epi32(s: __m256i) -> u32 {
        let h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
        let h = _mm_add_epi32(h, _mm_shuffle_epi32::<0b1110>(h));
        let h = _mm_add_epi32(h, _mm_shuffle_epi32::<1>(h));
        _mm_cvtsi128_si32(h) as u32
    }

    /// See `super::scan_codes_bounded`. Rows are summed 32 components at a
    /// time; after half of the 32-blocks the partial sum is tested. One test:
    /// a test after a quarter too stopped few rows (a quarter of the sum rarely
    /// exceeds the bound) and its unpredictable branch made the scan slower.
    #[target_feature(enable = "avx2,fma")]
    pub fn scan_codes_bounded<F: FnMut(usize, u32) -> u32>(query: &[i16], codes: &[u8], mut bound: u32, mut hit: F) {
        let n = query.len();
        let blocks = n / 32;
        let half = blocks / 2;
        let pq = query.as_ptr();
        'rows: for (i, row) in codes.chunks_exact(n).enumerate() {
            let pc = row.as_ptr();
            let mut acc = [_mm256_setzero_si256(); 2];
            // One 32-component block into the two accumulators (a macro, not a
            // closure: the AVX2 intrinsics must stay inside this function).
            macro_rules! block {
                ($b:expr) => {
                    for (j, s) in acc.iter_mut().enumerate() {
                        let o = 32 * $b + 16 * j;
                        // SAFETY: o + 16 <= 32 * blocks <= n, and both slices hold n values.
                        let (q, c) = unsafe {
                            (
                                _mm256_loadu_si256(pq.add(o).cast()),
                                _mm_loadu_si128(pc.add(o).cast()),
                            )
                        };
                        let d = _mm256_sub_epi16(q, _mm256_cvtepu8_epi16(c));
                        *s = _mm256_add_epi32(*s, _mm256_madd_epi16(d, d));
                    }
                };
            }
            for b in 0..blocks {
                block!(b);
                if b + 1 == half && hsum_epi32(_mm256_add_epi32(acc[0], acc[1])) > bound {
                    continue 'rows; // sums of squares only grow: this row cannot qualify
                }
            }
            let d = hsum_epi32(_mm256_add_epi32(acc[0], acc[1])).wrapping_add(super::l2_squared_codes_scalar(
                &query[32 * blocks..],
                &row[32 * blocks..],
            ));
            if d <= bound {
                bound = hit(i, d);
            }
        }
    }
}

/// The portable version of the code kernel (also the tail of the SIMD one).
#[inline]
fn l2_squared_codes_scalar(query: &[i16], codes: &[u8]) -> u32 {
    let sq = |(&q, &c): (&i16, &u8)| {
        let d = i32::from(q) - i32::from(c);
        (d * d) as u32
    };
    query.iter().zip(codes).map(sq).fold(0u32, u32::wrapping_add)
}

/// Squared distances from an i16 query to each `query.len()`-sized row of u8
/// `codes`, in code units. Exact while every sum of squares fits in a u32: the
/// caller bounds the query values (see `Quantizer::encode_query`).
pub fn l2_squared_codes_rows(query: &[i16], codes: &[u8], out: &mut [u32]) {
    if query.is_empty() {
        out.fill(0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { avx2::scan_codes(query, codes, out) };
        return;
    }
    for (row, d) in codes.chunks_exact(query.len()).zip(out.iter_mut()) {
        *d = l2_squared_codes_scalar(query, row);
    }
}

/// The scan of a list, fused with the candidate test: for each `query.len()`-
/// sized row `i` of `codes` whose squared code distance `d` is at most `bound`,
/// calls `hit(i, d)`, which returns the bound from then on (it tightens as the
/// caller keeps better candidates). A row whose partial sum already exceeds the
/// bound is left half way: in a scan most rows are far, so most stop there.
pub fn scan_codes_bounded(query: &[i16], codes: &[u8], bound: u32, mut hit: impl FnMut(usize, u32) -> u32) {
    if query.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { avx2::scan_codes_bounded(query, codes, bound, hit) };
        return;
    }
    let mut bound = bound;
    for (i, row) in codes.chunks_exact(query.len()).enumerate() {
        let d = l2_squared_codes_scalar(query, row);
        if d <= bound {
            bound = hit(i, d);
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Squared distances from `query` to each `query.len()`-sized row of `rows`,
/// written to `out` (one per row; extra rows or outputs are left alone).
pub fn l2_squared_rows(query: &[f32], rows: &[f32], out: &mut [f32]) {
    if query.is_empty() {
        out.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA, checked just above.
        unsafe { avx2::scan(query, rows, out) };
        return;
    }
    for (row, d) in rows.chunks_exact(query.len()).zip(out.iter_mut()) {
        *d = l2_squared_scalar(query, row);
    }
}

/// Euclidean (L2) distance, the value returned to clients.
#[allow(dead_code)] // the skeleton's contract names it; search scans whole blocks instead
pub fn l2_distance(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len());
    let mut d = [0.0f32];
    l2_squared_rows(&a[..n], &b[..n], &mut d);
    f64::from(d[0]).sqrt()
}
