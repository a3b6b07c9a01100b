/// Squared Euclidean distance. Ranking by it is the same as ranking by the
/// distance itself and saves a square root per scanned vector.
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Euclidean (L2) distance, the value returned to clients.
#[allow(dead_code)] // kept: the skeleton's contract names it; search uses l2_squared
pub fn l2_distance(a: &[f32], b: &[f32]) -> f64 {
    f64::from(l2_squared(a, b)).sqrt()
}
