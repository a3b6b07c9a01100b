//! Request and response bodies of the HTTP API. READ-ONLY.

use serde::{Deserialize, Serialize};

/// `POST /insert` body, and one element of a bulk insert.
#[derive(Deserialize)]
pub struct InsertRequest {
    pub id: u64,
    pub vector: Vec<f32>,
}

#[derive(Serialize)]
pub struct InsertResponse {
    pub status: String,
}

/// `POST /bulk_insert` body.
#[derive(Deserialize)]
pub struct BulkInsertRequest {
    pub vectors: Vec<InsertRequest>,
}

#[derive(Serialize)]
pub struct BulkInsertResponse {
    pub status: String,
    pub inserted: usize,
}

/// `POST /search` body.
#[derive(Deserialize)]
pub struct SearchRequest {
    pub vector: Vec<f32>,
    pub top_k: u32,
}

/// One neighbour: its id and its L2 distance to the query.
#[derive(Serialize)]
pub struct SearchResult {
    pub id: u64,
    pub distance: f64,
}

/// Results nearest first.
#[derive(Serialize)]
pub struct SearchResponse {
    pub results: Vec<SearchResult>,
}
