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
    let mut hits = Vec::new();
    let (parsed, failure) = check_search_into(body, top_k, max_id, &mut hits);
    Checked {
        hits: parsed.then_some(hits),
        failure,
    }
}

/// [`check_search`] into a reused vector: `hits` holds the parsed hits when the first value
/// is true (the body parsed), and the second is the first failed check, if any.
pub fn check_search_into(
    body: &[u8],
    top_k: u32,
    max_id: u64,
    hits: &mut Vec<Hit>,
) -> (bool, Option<Failure>) {
    hits.clear();
    if fast::parse(body, hits).is_none() {
        // Anything the fast parser does not take (escapes, other keys, bad JSON) goes through
        // serde_json, whose verdict and message stand.
        hits.clear();
        match serde_json::from_slice::<SearchResponse>(body) {
            Ok(parsed) => hits.extend(parsed.results),
            Err(e) => {
                let detail = format!("{e}; body starts {:?}", lossy_prefix(body, 120));
                return (false, Some(Failure::new(ErrorKind::BadJson, detail)));
            }
        }
    }
    (true, first_failure(hits, top_k, max_id))
}

/// A parser for the common shape of a /search response, `{"results":[{"id":N,"distance":F},
/// ...]}` in any key order and spacing, without allocation. It gives up (None) on anything
/// else, including anything serde_json would reject, so that serde_json decides those; where
/// it succeeds its result is serde_json's (both round floats correctly: serde_json is built
/// with `float_roundtrip`).
mod fast {
    use super::Hit;

    struct Cursor<'a> {
        s: &'a [u8],
        i: usize,
    }

    impl<'a> Cursor<'a> {
        fn ws(&mut self) {
            while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
                self.i += 1;
            }
        }

        /// Skips whitespace, then consumes `b` if it is next.
        fn eat(&mut self, b: u8) -> bool {
            self.ws();
            if self.s.get(self.i) == Some(&b) {
                self.i += 1;
                true
            } else {
                false
            }
        }

        fn expect(&mut self, b: u8) -> Option<()> {
            self.eat(b).then_some(())
        }

        /// A string without escapes or control characters.
        fn key(&mut self) -> Option<&'a [u8]> {
            self.expect(b'"')?;
            let start = self.i;
            for known in [&b"id\""[..], b"distance\"", b"results\""] {
                if self.s[start..].starts_with(known) {
                    self.i += known.len();
                    return Some(&known[..known.len() - 1]);
                }
            }
            loop {
                match *self.s.get(self.i)? {
                    b'"' => break,
                    b'\\' | 0..=0x1f => return None,
                    _ => self.i += 1,
                }
            }
            let key = &self.s[start..self.i];
            self.i += 1;
            Some(key)
        }

        fn digits(&mut self) -> usize {
            let start = self.i;
            while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
            self.i - start
        }

        /// A non-negative JSON integer that fits in u64.
        fn id(&mut self) -> Option<u64> {
            self.ws();
            let start = self.i;
            let mut v: u64 = 0;
            while let Some(&d) = self.s.get(self.i).filter(|d| d.is_ascii_digit()) {
                v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
                self.i += 1;
            }
            let n = self.i - start;
            if n == 0 || (n > 1 && self.s[start] == b'0') {
                return None;
            }
            if matches!(self.s.get(self.i), Some(b'.' | b'e' | b'E')) {
                return None;
            }
            Some(v)
        }

        /// A finite JSON number, or null.
        fn distance(&mut self) -> Option<Option<f64>> {
            self.ws();
            if self.s[self.i..].starts_with(b"null") {
                self.i += 4;
                return Some(None);
            }
            let start = self.i;
            let negative = self.s.get(self.i) == Some(&b'-');
            if negative {
                self.i += 1;
            }
            // The digits as an integer while it stays exact in an f64 (below 10^15 < 2^53).
            let mut mantissa: u64 = 0;
            let mut significant = 0usize;
            let int_start = self.i;
            while let Some(&d) = self.s.get(self.i).filter(|d| d.is_ascii_digit()) {
                mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                significant += usize::from(mantissa != 0);
                self.i += 1;
            }
            let int = self.i - int_start;
            if int == 0 || (int > 1 && self.s[int_start] == b'0') {
                return None;
            }
            let mut fraction = 0usize;
            if self.s.get(self.i) == Some(&b'.') {
                self.i += 1;
                while let Some(&d) = self.s.get(self.i).filter(|d| d.is_ascii_digit()) {
                    mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                    significant += usize::from(mantissa != 0);
                    self.i += 1;
                    fraction += 1;
                }
                if fraction == 0 {
                    return None;
                }
            }
            let mut exponent = false;
            if let Some(b'e' | b'E') = self.s.get(self.i) {
                exponent = true;
                self.i += 1;
                if let Some(b'+' | b'-') = self.s.get(self.i) {
                    self.i += 1;
                }
                if self.digits() == 0 {
                    return None;
                }
            }
            let v = if !exponent && significant <= 15 && fraction < POW10.len() {
                // Both exact in f64, so one division rounds correctly (Clinger's fast path),
                // as the full parse would.
                let v = mantissa as f64 / POW10[fraction];
                if negative {
                    -v
                } else {
                    v
                }
            } else {
                // ASCII by construction.
                let text = std::str::from_utf8(&self.s[start..self.i]).ok()?;
                text.parse().ok()?
            };
            v.is_finite().then_some(Some(v))
        }
    }

    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];

    pub(super) fn parse(body: &[u8], hits: &mut Vec<Hit>) -> Option<()> {
        let mut c = Cursor { s: body, i: 0 };
        c.expect(b'{')?;
        if c.key()? != b"results" {
            return None;
        }
        c.expect(b':')?;
        c.expect(b'[')?;
        if !c.eat(b']') {
            loop {
                hits.push(hit(&mut c)?);
                if c.eat(b']') {
                    break;
                }
                c.expect(b',')?;
            }
        }
        c.expect(b'}')?;
        c.ws();
        (c.i == body.len()).then_some(())
    }

    fn hit(c: &mut Cursor) -> Option<Hit> {
        c.expect(b'{')?;
        let (mut id, mut distance) = (None, None);
        loop {
            match c.key()? {
                b"id" if id.is_none() => {
                    c.expect(b':')?;
                    id = Some(c.id()?);
                }
                b"distance" if distance.is_none() => {
                    c.expect(b':')?;
                    distance = Some(c.distance()?);
                }
                _ => return None,
            }
            if c.eat(b'}') {
                break;
            }
            c.expect(b',')?;
        }
        Some(Hit {
            id: id?,
            distance: distance.flatten(),
        })
    }
}

fn first_failure(hits: &[Hit], top_k: u32, max_id: u64) -> Option<Failure> {
    let expected = u64::from(top_k).min(max_id);
    if hits.len() as u64 != expected {
        let detail = format!("expected {expected} results, got {}", hits.len());
        return Some(Failure::new(ErrorKind::WrongK, detail));
    }
    // Sorted ids, on the stack for the usual small k.
    let mut small = [0u64; 64];
    let mut large = Vec::new();
    let ids: &mut [u64] = if hits.len() <= small.len() {
        &mut small[..hits.len()]
    } else {
        large.extend(hits.iter().map(|h| h.id));
        &mut large
    };
    for (slot, h) in ids.iter_mut().zip(hits) {
        *slot = h.id;
    }
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

    /// The fast parser's answer, checked against serde_json's wherever it gives one.
    fn fast_agrees(body: &[u8]) -> bool {
        let mut hits = Vec::new();
        let fast = fast::parse(body, &mut hits).is_some();
        if fast {
            let serde: SearchResponse = serde_json::from_slice(body).unwrap_or_else(|e| {
                panic!("fast took {:?}, serde_json: {e}", lossy_prefix(body, 200))
            });
            assert_eq!(hits.len(), serde.results.len());
            for (a, b) in hits.iter().zip(&serde.results) {
                assert_eq!(a.id, b.id);
                assert_eq!(
                    a.distance.map(f64::to_bits),
                    b.distance.map(f64::to_bits),
                    "{body:?}"
                );
            }
        }
        fast
    }

    #[test]
    fn fast_parser_agrees_with_serde_json() {
        for ok in [
            &br#"{"results":[{"id":0,"distance":0.0},{"id":1,"distance":1.5}]}"#[..],
            br#" { "results" : [ { "distance" : -2.25e-3 , "id" : 18446744073709551615 } ] } "#,
            b"{\"results\":[\n{\"id\":7,\"distance\":null},\t{\"id\":8}]}\n",
            br#"{"results":[]}"#,
            br#"{"results":[{"id":1,"distance":123456789012345678901234567890}]}"#,
            br#"{"results":[{"id":1,"distance":0.1000000000000000055511151231257827}]}"#,
            br#"{"results":[{"id":1,"distance":-0.0},{"id":2,"distance":1E+2},{"id":3,"distance":5e-324}]}"#,
        ] {
            assert!(fast_agrees(ok), "{:?}", lossy_prefix(ok, 200));
        }
        for given_up in [
            &br#"{"results":[{"id":1.0,"distance":0}]}"#[..],
            br#"{"results":[{"id":-1,"distance":0}]}"#,
            br#"{"results":[{"id":01,"distance":0}]}"#,
            br#"{"results":[{"id":18446744073709551616,"distance":0}]}"#,
            br#"{"results":[{"id":1,"distance":01}]}"#,
            br#"{"results":[{"id":1,"distance":1.}]}"#,
            br#"{"results":[{"id":1,"distance":1e999}]}"#,
            br#"{"results":[{"id":1,"distance":NaN}]}"#,
            br#"{"results":[{"id":1,"id":2,"distance":0}]}"#,
            br#"{"results":[{"distance":0}]}"#,
            br#"{"results":[{"id":1,"distance":0,"x":1}]}"#,
            br#"{"took":3,"results":[{"id":1,"distance":0}]}"#,
            br#"{"res\u0075lts":[{"id":1,"distance":0}]}"#,
            br#"{"results":[{"id":1,"distance":0},]}"#,
            br#"{"results":[{"id":1,"distance":0}]} x"#,
            br#"{"results":[{"id":1,"distance":0}"#,
            b"",
        ] {
            assert!(!fast_agrees(given_up), "{:?}", lossy_prefix(given_up, 200));
        }
        // Whatever the fast parser leaves is still judged: valid JSON with extra keys passes.
        let extra = br#"{"took":3,"results":[{"id":1,"distance":0,"x":[1]}]}"#;
        assert!(check_search(extra, 1, 10).failure.is_none());
        assert_eq!(
            kind(br#"{"results":[{"id":1.5,"distance":0}]}"#, 1, 10),
            Some(ErrorKind::BadJson)
        );
    }

    #[test]
    fn fast_parser_rounds_floats_like_a_full_parse() {
        // A small deterministic generator: decimals of every length the fast path takes and
        // beyond it, printed in the ways servers print them.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let digits = 1 + next() % 19;
            let mantissa = next() % 10u64.pow(digits as u32);
            let point = (next() % (digits + 1)) as usize;
            let text = mantissa.to_string();
            let text = format!("{text:0>width$}", width = digits as usize + 1);
            let (int, frac) = text.split_at(text.len() - point);
            let int = int.trim_start_matches('0');
            let int = if int.is_empty() { "0" } else { int };
            let number = if frac.is_empty() {
                int.to_string()
            } else {
                format!("{int}.{frac}")
            };
            let f = (next() as f32 / 1e9).to_string();
            for n in [number.as_str(), f.as_str()] {
                let body = format!(r#"{{"results":[{{"id":1,"distance":{n}}}]}}"#);
                assert!(fast_agrees(body.as_bytes()), "{body}");
                let mut hits = Vec::new();
                fast::parse(body.as_bytes(), &mut hits).unwrap();
                assert_eq!(
                    hits[0].distance.unwrap().to_bits(),
                    n.parse::<f64>().unwrap().to_bits(),
                    "{n}"
                );
            }
        }
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
