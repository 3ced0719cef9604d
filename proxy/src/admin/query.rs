//! Admin query strings: `?filter=%5Ecluster&usedonly` → ordered, percent-decoded pairs.

/// The decoded parameters of one admin request, in the order given.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(query: Option<&str>) -> Self {
        let Some(q) = query else {
            return Self::default();
        };
        Self(
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (decode(k), decode(v)),
                    None => (decode(p), String::new()),
                })
                .collect(),
        )
    }

    /// The first value of `key` (`Some("")` for a bare `?usedonly`).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// Percent-decoding only: `+` stays `+`, as in Envoy, because regex filters use it.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_keeps_bare_keys() {
        let q = Query::parse(Some("filter=%5Ecluster%5C.web+x&usedonly&bad=%zz%4"));
        assert_eq!(q.get("filter"), Some(r"^cluster\.web+x"));
        assert_eq!(q.get("usedonly"), Some(""));
        assert_eq!(q.get("bad"), Some("%zz%4"));
        assert!(!q.has("format"));
    }
}
