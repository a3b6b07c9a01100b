use crate::api::*;

pub struct VectorDB {
    // Your data structures go here.
}

impl VectorDB {
    pub fn new() -> Self {
        todo!()
    }

    pub fn insert(&self, id: u64, vector: Vec<f32>) {
        todo!()
    }

    /// Returns the number of vectors inserted.
    pub fn bulk_insert(&self, vectors: Vec<(u64, Vec<f32>)>) -> usize {
        todo!()
    }

    /// The `top_k` nearest stored vectors by L2 distance, nearest first.
    pub fn search(&self, vector: &[f32], top_k: u32) -> Vec<SearchResult> {
        todo!()
    }
}
