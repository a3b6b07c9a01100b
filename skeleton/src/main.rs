//! HTTP entry point. READ-ONLY: the benchmark talks to these three routes.
//! Implement the database in `db.rs` and `distance.rs`.

use std::sync::Arc;

use axum::{extract::State, routing::post, Json, Router};
use tokio::net::TcpListener;

mod api;
mod db;
mod distance;

use api::*;
use db::VectorDB;

#[tokio::main]
async fn main() {
    let db = Arc::new(VectorDB::new());

    // Request bodies keep axum's default limit (2 MiB), as in the original
    // skeleton; the benchmark's bulk-insert batches fit well under it.
    let app = Router::new()
        .route("/insert", post(insert))
        .route("/bulk_insert", post(bulk_insert))
        .route("/search", post(search))
        .with_state(db);

    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".to_string());
    let listener = TcpListener::bind(format!("0.0.0.0:{port}"))
        .await
        .expect("cannot bind the listening port");
    axum::serve(listener, app).await.expect("server error");
}

async fn insert(
    State(db): State<Arc<VectorDB>>,
    Json(req): Json<InsertRequest>,
) -> Json<InsertResponse> {
    db.insert(req.id, req.vector);
    Json(InsertResponse {
        status: "ok".to_string(),
    })
}

async fn bulk_insert(
    State(db): State<Arc<VectorDB>>,
    Json(req): Json<BulkInsertRequest>,
) -> Json<BulkInsertResponse> {
    let vectors = req.vectors.into_iter().map(|v| (v.id, v.vector)).collect();
    let inserted = db.bulk_insert(vectors);
    Json(BulkInsertResponse {
        status: "ok".to_string(),
        inserted,
    })
}

async fn search(
    State(db): State<Arc<VectorDB>>,
    Json(req): Json<SearchRequest>,
) -> Json<SearchResponse> {
    let results = db.search(&req.vector, req.top_k);
    Json(SearchResponse { results })
}
