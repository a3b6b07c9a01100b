//! Scalar quantization of vectors to one byte per component.
//!
//! code = round((x - lo[d]) / scale), clamped to 0..=255, with a per-dimension
//! offset but ONE scale for all dimensions: a squared distance between codes is
//! then the true squared distance divided by scale^2, up to rounding, so codes
//! rank vectors almost as f32 does. Integer data whose range fits in 256
//! values (SIFT: 0..255) gets scale 1 and is encoded exactly.
//!
//! Codes hold the components in order of decreasing variance (a permutation:
//! distances are unchanged), so that a scan which stops a row once its partial
//! sum exceeds a bound sees the largest differences first.

pub struct Quantizer {
    lo: Vec<f32>,
    inv_scale: f32,
    /// Scale 1 on integer data: codes of in-range integer vectors are exact.
    unit: bool,
    /// Largest and smallest query code: queries outside the data's range keep
    /// some of their distance instead of being clamped to the edge.
    query_range: (i16, i16),
    /// Component order of the codes: `order[i]` is the dimension stored at `i`.
    order: Vec<usize>,
}

impl Quantizer {
    /// Fits the offsets and the scale to `sample` (rows of `dim` values).
    pub fn fit(sample: &[f32], dim: usize) -> Quantizer {
        let mut lo = vec![f32::INFINITY; dim];
        let mut hi = vec![f32::NEG_INFINITY; dim];
        for row in sample.chunks_exact(dim) {
            for d in 0..dim {
                lo[d] = lo[d].min(row[d]);
                hi[d] = hi[d].max(row[d]);
            }
        }
        let range = (0..dim)
            .map(|d| hi[d] - lo[d])
            .filter(|r| r.is_finite())
            .fold(0.0f32, f32::max);
        let integral = sample.iter().all(|x| x.fract() == 0.0);
        let scale = if range <= 0.0 || (integral && range <= 255.0) {
            1.0
        } else {
            range / 255.0
        };
        for l in &mut lo {
            if !l.is_finite() {
                *l = 0.0;
            }
        }
        // Query codes: -512..=767 keeps each squared difference under 768^2, so a
        // u32 sum of squares is exact up to ~7,000 dimensions; beyond, stay in 0..=255.
        let query_range = if dim <= 7000 { (-512, 767) } else { (0, 255) };
        let rows = (sample.len() / dim.max(1)).max(1) as f64;
        let mut var = vec![0.0f64; dim];
        for d in 0..dim {
            let mean = sample
                .iter()
                .skip(d)
                .step_by(dim.max(1))
                .map(|&x| f64::from(x))
                .sum::<f64>()
                / rows;
            var[d] = sample
                .iter()
                .skip(d)
                .step_by(dim.max(1))
                .map(|&x| (f64::from(x) - mean).powi(2))
                .sum::<f64>();
        }
        let mut order: Vec<usize> = (0..dim).collect();
        order.sort_by(|&a, &b| var[b].total_cmp(&var[a]).then(a.cmp(&b)));
        Quantizer {
            lo,
            inv_scale: 1.0 / scale,
            unit: scale == 1.0,
            query_range,
            order,
        }
    }

    /// Appends the codes of `vector` to `out`; true when they are exact (the
    /// vector is `lo + code` component by component).
    pub fn encode(&self, vector: &[f32], out: &mut Vec<u8>) -> bool {
        let mut exact = self.unit;
        out.extend(self.order.iter().map(|&d| {
            let (x, lo) = (&vector[d], &self.lo[d]);
            let c = ((x - lo) * self.inv_scale).round().clamp(0.0, 255.0);
            exact &= c + lo == *x;
            c as u8
        }));
        exact
    }

    /// The query on the same grid, as i16, and whether it is exact there.
    pub fn encode_query(&self, query: &[f32]) -> (Vec<i16>, bool) {
        let (min, max) = (f32::from(self.query_range.0), f32::from(self.query_range.1));
        let mut exact = self.unit;
        let code = self
            .order
            .iter()
            .map(|&d| {
                let (x, lo) = (&query[d], &self.lo[d]);
                let c = ((x - lo) * self.inv_scale).round().clamp(min, max);
                exact &= c + lo == *x;
                c as i16
            })
            .collect();
        (code, exact)
    }
}
