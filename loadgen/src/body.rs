//! Request bodies, serialized by hand: the generator must never be the bottleneck, and
//! SIFT components are integers stored as f32, which print shortest as integers.

use bytes::Bytes;

/// Appends `v` as a JSON number: integers without a fraction (`12`), others in ryu's
/// shortest round-trip form. Non-finite values have no JSON form and are written as `null`,
/// which the server will reject (our datasets never contain them).
pub fn push_f32(out: &mut Vec<u8>, v: f32) {
    if !v.is_finite() {
        out.extend_from_slice(b"null");
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        // Exact: |v| < 1e15 fits in i64 and an integral f32 converts without rounding.
        out.extend_from_slice(itoa::Buffer::new().format(v as i64).as_bytes());
    } else {
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    }
}

/// Appends `[v0,v1,...]`.
pub fn push_vector(out: &mut Vec<u8>, vector: &[f32]) {
    out.push(b'[');
    for (i, &v) in vector.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_f32(out, v);
    }
    out.push(b']');
}

/// `{"vector":[...],"top_k":K}` for POST /search.
pub fn search_body(vector: &[f32], top_k: u32) -> Bytes {
    let mut out = Vec::with_capacity(16 + vector.len() * 6);
    out.extend_from_slice(b"{\"vector\":");
    push_vector(&mut out, vector);
    out.extend_from_slice(b",\"top_k\":");
    out.extend_from_slice(itoa::Buffer::new().format(top_k).as_bytes());
    out.push(b'}');
    Bytes::from(out)
}

/// `{"vectors":[{"id":first_id,"vector":[...]},...]}` for POST /bulk_insert; ids are
/// consecutive from `first_id`, `data` holds rows of `dim` values.
pub fn bulk_insert_body(out: &mut Vec<u8>, first_id: u64, dim: usize, data: &[f32]) {
    out.extend_from_slice(b"{\"vectors\":[");
    for (i, row) in data.chunks_exact(dim).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"id\":");
        out.extend_from_slice(itoa::Buffer::new().format(first_id + i as u64).as_bytes());
        out.extend_from_slice(b",\"vector\":");
        push_vector(out, row);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_print_compactly_and_fractions_round_trip() {
        let mut out = Vec::new();
        push_vector(&mut out, &[12.0, 0.0, -3.0, 0.1, 1e20, 16777216.0]);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "[12,0,-3,0.1,1e20,16777216]");
        let back: Vec<f32> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, vec![12.0, 0.0, -3.0, 0.1, 1e20, 16777216.0]);
    }

    #[test]
    fn bodies_are_valid_json() {
        let v: serde_json::Value = serde_json::from_slice(&search_body(&[1.0, 2.5], 10)).unwrap();
        assert_eq!(v, serde_json::json!({"vector": [1, 2.5], "top_k": 10}));
        let mut out = Vec::new();
        bulk_insert_body(&mut out, 7, 2, &[1.0, 2.0, 3.0, 4.0]);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"vectors": [{"id": 7, "vector": [1, 2]}, {"id": 8, "vector": [3, 4]}]})
        );
    }
}
