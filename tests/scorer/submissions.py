"""Misbehaving submissions, each written as the stage-1 brute force plus one change.

The stage-1 ``search`` is renamed ``exact_search`` and a variant adds its own ``search`` (or ``new``,
``bulk_insert``) in a second ``impl`` block, so every variant is the working baseline with exactly
one fault. The Cargo.toml keeps ``debug = true`` but drops LTO so that tests build quickly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STAGE1 = REPO / "reference" / "stage01-brute-force"

FAST_CARGO = """[package]
name = "vector-db-skeleton"
version = "0.1.0"
edition = "2021"

[dependencies]
axum = "0.7"
tokio = { version = "1", features = ["full"] }
serde = { version = "1", features = ["derive"] }
serde_json = "1"
{extra}
[profile.release]
opt-level = 3
codegen-units = 16
debug = true
"""

# name -> (rename of a stage-1 method, Rust code of an extra impl block or module items)
VARIANTS: dict[str, tuple[str | None, str]] = {
    # A well-behaved submission that does every search twice: half as fast, the same answers.
    "twice_as_slow": ("search", """
impl VectorDB {
    pub fn search(&self, v: &[f32], k: u32) -> Vec<SearchResult> {
        std::hint::black_box(self.exact_search(v, k));
        self.exact_search(v, k)
    }
}"""),
    "abort_on_search": ("search", """
impl VectorDB {
    pub fn search(&self, _v: &[f32], _k: u32) -> Vec<SearchResult> { std::process::abort() }
}"""),
    "never_accepts": ("new", """
impl VectorDB {
    pub fn new() -> Self { loop { std::thread::sleep(std::time::Duration::from_secs(60)); } }
}"""),
    "wrong_k": ("search", """
impl VectorDB {
    pub fn search(&self, v: &[f32], k: u32) -> Vec<SearchResult> {
        let mut r = self.exact_search(v, k); r.pop(); r
    }
}"""),
    "duplicate_ids": ("search", """
impl VectorDB {
    pub fn search(&self, v: &[f32], k: u32) -> Vec<SearchResult> {
        let r = self.exact_search(v, k);
        r.iter().map(|_| SearchResult { id: r[0].id, distance: r[0].distance }).collect()
    }
}"""),
    "random_ids": ("search", """
impl VectorDB {
    pub fn search(&self, v: &[f32], k: u32) -> Vec<SearchResult> {
        // Honest distances of ids that are not the neighbours: a well-formed, useless answer.
        let n = self.vectors.read().unwrap().len() as u64;
        let seed = v.iter().fold(17u64, |h, x| h.wrapping_mul(31).wrapping_add(x.to_bits() as u64));
        let stored = self.vectors.read().unwrap();
        let mut out: Vec<SearchResult> = (0..k as u64).map(|i| {
            let id = (seed.wrapping_mul(6364136223846793005).wrapping_add(i * 7919)) % n;
            let id = (id + i) % n;
            SearchResult { id, distance: crate::distance::l2_distance(v, &stored[id as usize].1) }
        }).collect();
        out.sort_by(|a, b| a.distance.total_cmp(&b.distance));
        out.dedup_by_key(|r| r.id);
        out
    }
}"""),
    "same_ids": ("search", """
impl VectorDB {
    pub fn search(&self, v: &[f32], k: u32) -> Vec<SearchResult> {
        let stored = self.vectors.read().unwrap();
        let mut out: Vec<SearchResult> = (0..k as u64).map(|id| SearchResult {
            id, distance: crate::distance::l2_distance(v, &stored[id as usize].1) }).collect();
        out.sort_by(|a, b| a.distance.total_cmp(&b.distance));
        out
    }
}"""),
    "wrong_distances": ("search", """
impl VectorDB {
    pub fn search(&self, v: &[f32], k: u32) -> Vec<SearchResult> {
        self.exact_search(v, k).into_iter()
            .map(|r| SearchResult { id: r.id, distance: r.distance * 2.0 + 1.0 }).collect()
    }
}"""),
    "caches_results": ("search", """
static CACHE: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<Vec<u32>, Vec<(u64, f64)>>>> =
    std::sync::OnceLock::new();
impl VectorDB {
    pub fn search(&self, v: &[f32], k: u32) -> Vec<SearchResult> {
        let key: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(hit) = cache.lock().unwrap().get(&key) {
            return hit.iter().map(|&(id, distance)| SearchResult { id, distance }).collect();
        }
        let r = self.exact_search(v, k);
        cache.lock().unwrap().insert(key, r.iter().map(|x| (x.id, x.distance)).collect());
        r
    }
}"""),
    # A cache that still pays a fifth of a search on a hit: worth ~2x QPS, below the pass-QPS bar
    # (3x), so only the fresh-versus-remembered latency check can catch it.
    "caches_modestly": ("search", """
static CACHE: std::sync::OnceLock<
    std::sync::Mutex<std::collections::HashMap<Vec<u32>, (Vec<(u64, f64)>, std::time::Duration)>>,
> = std::sync::OnceLock::new();
impl VectorDB {
    pub fn search(&self, v: &[f32], k: u32) -> Vec<SearchResult> {
        let key: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
        let cache = CACHE.get_or_init(Default::default);
        let hit = cache.lock().unwrap().get(&key).cloned();
        if let Some((r, took)) = hit {
            let until = std::time::Instant::now() + took / 5;
            while std::time::Instant::now() < until { std::hint::spin_loop(); }
            return r.iter().map(|&(id, distance)| SearchResult { id, distance }).collect();
        }
        let t = std::time::Instant::now();
        let r = self.exact_search(v, k);
        cache.lock().unwrap().insert(key, (r.iter().map(|x| (x.id, x.distance)).collect(), t.elapsed()));
        r
    }
}"""),
    "memory_flood": ("bulk_insert", """
impl VectorDB {
    pub fn bulk_insert(&self, vectors: Vec<(u64, Vec<f32>)>) -> usize {
        let mut hog: Vec<Vec<u8>> = Vec::new();
        loop { hog.push(vec![1u8; 64 << 20]); if hog.len() > 1 << 20 { break; } }
        self.exact_bulk_insert(vectors) + hog.len()
    }
}"""),
    # Looks for what it was not given (vector files anywhere, the scorer's inputs) and for a way out
    # (TCP to the outside and to the Docker host), and says what it found; then serves honestly.
    "snoops": ("new", """
fn snoop(dir: &std::path::Path, depth: usize, found: &mut Vec<String>) {
    if depth == 0 || dir.starts_with("/proc") || dir.starts_with("/sys") { return; }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let name = path.to_string_lossy().to_string();
        if [".fvecs", ".ivecs", ".bvecs", ".i64", ".u32", ".hdf5", "ground_truth.json"]
            .iter().any(|x| name.ends_with(x)) && std::fs::File::open(&path).is_ok() {
            found.push(name.clone());
        }
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) { snoop(&path, depth - 1, found); }
    }
}
impl VectorDB {
    pub fn new() -> Self {
        let mut found = Vec::new();
        snoop(std::path::Path::new("/"), 8, &mut found);
        let mut reached = Vec::new();
        for addr in ["1.1.1.1:80", "172.17.0.1:2375", "172.17.0.1:22", "8.8.8.8:53"] {
            let a: std::net::SocketAddr = addr.parse().unwrap();
            if std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_millis(500)).is_ok() {
                reached.push(addr);
            }
        }
        println!("SNOOP files={:?} reached={:?}", found, reached);
        Self::exact_new()
    }
}"""),
    "fork_bomb": ("new", """
impl VectorDB {
    pub fn new() -> Self {
        let mut children = Vec::new();
        for _ in 0..100_000 {
            match std::process::Command::new("/bin/sleep").arg("1000").spawn() {
                Ok(c) => children.push(c),
                Err(_) => break,
            }
        }
        std::mem::forget(children);
        VectorDB { vectors: std::sync::RwLock::new(Vec::new()) }
    }
}"""),
    "log_flood": ("search", """
impl VectorDB {
    pub fn search(&self, v: &[f32], k: u32) -> Vec<SearchResult> {
        use std::io::Write;
        let line = "x".repeat(1 << 16);
        let mut out = std::io::stdout().lock();
        for _ in 0..16 { let _ = writeln!(out, "{line}"); }
        self.exact_search(v, k)
    }
}"""),
    "endless_lazy_build": ("search", """
impl VectorDB {
    pub fn search(&self, _v: &[f32], _k: u32) -> Vec<SearchResult> {
        // "Building the index on first search" that never finishes.
        loop { std::hint::spin_loop(); }
    }
}"""),
}

RENAMES = {
    "search": ("pub fn search(", "fn exact_search("),
    "new": ("pub fn new()", "fn exact_new()"),
    "bulk_insert": ("pub fn bulk_insert(", "fn exact_bulk_insert("),
}


def write_stage1(dest: Path, *, extra_deps: str = "") -> Path:
    """The stage-1 brute force as a complete crate with the fast test profile."""
    shutil.copytree(REPO / "skeleton", dest, ignore=shutil.ignore_patterns("target", "API.md"))
    for f in (STAGE1 / "src").iterdir():
        shutil.copy(f, dest / "src" / f.name)
    (dest / "Cargo.toml").write_text(FAST_CARGO.replace("{extra}", extra_deps))
    return dest


def write_variant(name: str, dest: Path) -> Path:
    """A stage-1 crate with the fault ``name`` (see VARIANTS and the special cases below)."""
    write_stage1(dest)
    db = dest / "src" / "db.rs"
    if name == "compile_error":
        db.write_text(db.read_text() + "\nfn broken( {\n")
        return dest
    if name == "edited_read_only":
        main = dest / "src" / "main.rs"
        main.write_text(main.read_text().replace("8080", "8081"))
        return dest
    if name == "banned_crate":
        (dest / "Cargo.toml").write_text(FAST_CARGO.replace("{extra}", 'hnsw_rs = "0.3"\n'))
        return dest
    if name == "dropped_debug":
        (dest / "Cargo.toml").write_text(FAST_CARGO.replace("{extra}", "").replace("debug = true", "debug = false"))
        return dest
    rename, extra = VARIANTS[name]
    text = db.read_text()
    if rename:
        old, new = RENAMES[rename]
        assert old in text, f"stage 1 has no {old!r}"
        text = text.replace(old, f"#[allow(dead_code)]\n    {new}", 1)
    db.write_text(text + "\n" + extra + "\n")
    return dest
