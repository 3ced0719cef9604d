//! Path normalization before routing (`normalize_path`, `merge_slashes`), as RFC 3986 §6.2.2 and
//! Envoy describe it: decode percent-encoded unreserved characters, uppercase other escapes, remove
//! dot segments, and optionally collapse repeated slashes. The query is left alone.

/// The normalized form of `path` (which has no query), or `None` when it is unchanged.
pub fn normalize(path: &str, rfc3986: bool, merge_slashes: bool) -> Option<String> {
    let mut out = if rfc3986 {
        remove_dot_segments(&decode_unreserved(path))
    } else {
        path.to_string()
    };
    if merge_slashes {
        let mut merged = String::with_capacity(out.len());
        let mut prev_slash = false;
        for c in out.chars() {
            if c == '/' && prev_slash {
                continue;
            }
            prev_slash = c == '/';
            merged.push(c);
        }
        out = merged;
    }
    (out != path).then_some(out)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let b = h * 16 + l;
                if is_unreserved(b) {
                    out.push(b as char);
                } else {
                    out.push('%');
                    out.push((bytes[i + 1] as char).to_ascii_uppercase());
                    out.push((bytes[i + 2] as char).to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

/// RFC 3986 §5.2.4, on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let trailing = path.ends_with("/.") || path.ends_with("/..") || path.ends_with('/');
    for seg in path.split('/').skip(1) {
        match seg {
            "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing && !out.ends_with('/') {
        out.push('/');
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn dot_segments_and_slashes() {
        assert_eq!(normalize("/a//b/../c", true, true).as_deref(), Some("/a/c"));
        assert_eq!(
            normalize("/a//b/../c", true, false).as_deref(),
            Some("/a//c")
        );
        assert_eq!(normalize("/a/./b/", true, false).as_deref(), Some("/a/b/"));
        assert_eq!(normalize("/../../x", true, false).as_deref(), Some("/x"));
        assert_eq!(normalize("/a/b", true, true), None);
    }

    #[test]
    fn unreserved_escapes_are_decoded() {
        assert_eq!(normalize("/a/%63", true, false).as_deref(), Some("/a/c"));
        assert_eq!(normalize("/a/%2f", true, false).as_deref(), Some("/a/%2F"));
        assert_eq!(normalize("/a/%zz", true, false), None);
    }
}
