/// L2 distance between two vectors of equal length.
pub fn l2_distance(a: &[f32], b: &[f32]) -> f64 {
    todo!()
}
