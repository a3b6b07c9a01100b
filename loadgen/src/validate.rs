//! Error kinds and the check of one /search response.

use serde::Deserialize;

/// Why one request failed; the names are the keys of `error_counts` in stats.json.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    HttpStatus,
    BodyTooLarge,
    BadJson,
    WrongK,
    DuplicateIds,
    IdOutOfRange,
    BadDistance,
    Unsorted,
    Timeout,
    Connect,
    Io,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::BadJson => "bad_json",
            ErrorKind::WrongK => "wrong_k",
            ErrorKind::DuplicateIds => "duplicate_ids",
            ErrorKind::IdOutOfRange => "id_out_of_range",
            ErrorKind::BadDistance => "bad_distance",
            ErrorKind::Unsorted => "unsorted",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Io => "io",
        }
    }
}

/// A failed request: its kind and a one-line explanation.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub kind: ErrorKind,
    pub detail: String,
}

impl Failure {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }
}

/// One returned neighbour. A `null` or missing distance (what serde_json writes for NaN)
/// parses as None so that it is reported as `bad_distance`, not `bad_json`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Hit {
    pub id: u64,
    pub distance: Option<f64>,
}

#[derive(Deserialize)]
struct SearchResponse {
    results: Vec<Hit>,
}

/// The outcome of checking one response: the hits whenever the body parsed (so the scorer
/// can judge them even when a check failed), and the first failed check, if any.
#[derive(Debug)]
pub struct Checked {
    pub hits: Option<Vec<Hit>>,
    pub failure: Option<Failure>,
}

/// Relative slack allowed between consecutive distances (float noise in the server's sort).
const SORT_SLACK: f64 = 1e-6;

/// Checks a 200 response body of POST /search: valid JSON of the contract's shape, exactly
/// min(top_k, max_id) results, distinct ids below `max_id`, finite non-decreasing distances.
pub fn check_search(body: &[u8], top_k: u32, max_id: u64) -> Checked {
    let hits = match serde_json::from_slice::<SearchResponse>(body) {
        Ok(parsed) => parsed.results,
        Err(e) => {
            let detail = format!("{e}; body starts {:?}", lossy_prefix(body, 120));
            return Checked {
                hits: None,
                failure: Some(Failure::new(ErrorKind::BadJson, detail)),
            };
        }
    };
    let failure = first_failure(&hits, top_k, max_id);
    Checked {
        hits: Some(hits),
        failure,
    }
}

fn first_failure(hits: &[Hit], top_k: u32, max_id: u64) -> Option<Failure> {
    let expected = u64::from(top_k).min(max_id);
    if hits.len() as u64 != expected {
        let detail = format!("expected {expected} results, got {}", hits.len());
        return Some(Failure::new(ErrorKind::WrongK, detail));
    }
    let mut ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Some(Failure::new(
            ErrorKind::DuplicateIds,
            format!("id {} returned more than once", w[0]),
        ));
    }
    if let Some(h) = hits.iter().find(|h| h.id >= max_id) {
        let detail = format!(
            "id {} is not below the number of inserted vectors {max_id}",
            h.id
        );
        return Some(Failure::new(ErrorKind::IdOutOfRange, detail));
    }
    if let Some((i, h)) = hits
        .iter()
        .enumerate()
        .find(|(_, h)| !h.distance.is_some_and(f64::is_finite))
    {
        let detail = format!("result {i} (id {}) has distance {:?}", h.id, h.distance);
        return Some(Failure::new(ErrorKind::BadDistance, detail));
    }
    for (i, w) in hits.windows(2).enumerate() {
        let (a, b) = (w[0].distance.unwrap_or(0.0), w[1].distance.unwrap_or(0.0));
        if b < a - SORT_SLACK * a.abs().max(b.abs()) {
            let detail = format!(
                "result {} distance {b} is smaller than result {i}'s {a}",
                i + 1
            );
            return Some(Failure::new(ErrorKind::Unsorted, detail));
        }
    }
    None
}

/// The first `max` bytes of `body` as text, for error details.
pub fn lossy_prefix(body: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&body[..body.len().min(max)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(pairs: &[(u64, f64)]) -> Vec<u8> {
        let results: Vec<_> = pairs
            .iter()
            .map(|(id, d)| serde_json::json!({"id": id, "distance": d}))
            .collect();
        serde_json::to_vec(&serde_json::json!({ "results": results })).unwrap()
    }

    fn kind(body: &[u8], k: u32, max_id: u64) -> Option<ErrorKind> {
        check_search(body, k, max_id).failure.map(|f| f.kind)
    }

    #[test]
    fn accepts_a_valid_response() {
        let checked = check_search(&body(&[(3, 0.5), (1, 0.5), (7, 2.0)]), 3, 10);
        assert!(checked.failure.is_none(), "{:?}", checked.failure);
        assert_eq!(
            checked
                .hits
                .unwrap()
                .iter()
                .map(|h| h.id)
                .collect::<Vec<_>>(),
            vec![3, 1, 7]
        );
    }

    #[test]
    fn k_is_capped_by_the_number_of_vectors() {
        assert_eq!(kind(&body(&[(0, 0.0), (1, 1.0)]), 10, 2), None);
        assert_eq!(
            kind(&body(&[(0, 0.0), (1, 1.0)]), 10, 3),
            Some(ErrorKind::WrongK)
        );
    }

    #[test]
    fn classifies_each_failure() {
        assert_eq!(kind(b"not json", 1, 10), Some(ErrorKind::BadJson));
        assert_eq!(
            kind(br#"{"results":[{"id":-1,"distance":0}]}"#, 1, 10),
            Some(ErrorKind::BadJson)
        );
        assert_eq!(
            kind(&body(&[(1, 0.0), (1, 1.0)]), 2, 10),
            Some(ErrorKind::DuplicateIds)
        );
        assert_eq!(
            kind(&body(&[(1, 0.0), (10, 1.0)]), 2, 10),
            Some(ErrorKind::IdOutOfRange)
        );
        assert_eq!(
            kind(br#"{"results":[{"id":1,"distance":null}]}"#, 1, 10),
            Some(ErrorKind::BadDistance)
        );
        assert_eq!(
            kind(&body(&[(1, 2.0), (2, 1.0)]), 2, 10),
            Some(ErrorKind::Unsorted)
        );
    }

    #[test]
    fn parsed_hits_survive_a_failed_check() {
        let checked = check_search(&body(&[(5, 2.0), (6, 1.0)]), 2, 10);
        assert_eq!(checked.failure.unwrap().kind, ErrorKind::Unsorted);
        assert_eq!(checked.hits.unwrap().len(), 2);
    }

    #[test]
    fn float_noise_in_the_order_is_tolerated() {
        assert_eq!(kind(&body(&[(1, 1000.0), (2, 999.9995)]), 2, 10), None);
        assert_eq!(
            kind(&body(&[(1, 1000.0), (2, 999.99)]), 2, 10),
            Some(ErrorKind::Unsorted)
        );
    }
}
