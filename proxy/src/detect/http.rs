//! Detect, HTTP: tell HTTP/2 with prior knowledge from HTTP/1.x by a connection's first bytes, as
//! Envoy's `http_inspector` does.
//!
//! The HTTP/2 connection preface settles `h2c`; otherwise the first line must be an HTTP/1 request
//! line (`METHOD SP target SP HTTP/d.d`): `HTTP/1.1` reports `http/1.1`, any other version
//! `http/1.0`, as Envoy does. The line must end within 64 KiB. Unlike Envoy's parser, which waits
//! for the end of the line, a byte that cannot belong to a method settles "not HTTP" at once, so
//! binary protocols are not held until the listener filter timeout.

/// `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n` (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Envoy's `MAX_INSPECT_SIZE`: a request line not ended by then closes the connection.
pub const MAX_INSPECT: usize = 64 * 1024;

/// What the first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Consistent with HTTP so far; more bytes are needed.
    Incomplete,
    NotHttp,
    Http10,
    Http11,
    H2c,
}

impl Outcome {
    /// The application protocol Envoy reports for it (`FilterChainMatch.application_protocols`).
    pub fn alpn(self) -> Option<&'static str> {
        match self {
            Outcome::Http10 => Some("http/1.0"),
            Outcome::Http11 => Some("http/1.1"),
            Outcome::H2c => Some("h2c"),
            Outcome::Incomplete | Outcome::NotHttp => None,
        }
    }
}

pub fn parse(bytes: &[u8]) -> Outcome {
    let n = bytes.len().min(H2_PREFACE.len());
    if bytes[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Outcome::H2c
        } else {
            Outcome::Incomplete
        };
    }
    if matches!(bytes.first(), Some(b'\r' | b'\n')) {
        return Outcome::NotHttp;
    }
    let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
        let method = bytes.split(|&b| b == b' ').next().unwrap_or_default();
        return if method.iter().all(|&b| is_tchar(b)) {
            Outcome::Incomplete
        } else {
            Outcome::NotHttp
        };
    };
    let line = &bytes[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    request_line(line)
}

fn request_line(line: &[u8]) -> Outcome {
    let mut parts = line.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Outcome::NotHttp;
    };
    if !method.iter().all(|&b| is_tchar(b)) || target.iter().any(|&b| b.is_ascii_control()) {
        return Outcome::NotHttp;
    }
    match version {
        b"HTTP/1.1" => Outcome::Http11,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Outcome::Http10
        }
        _ => Outcome::NotHttp,
    }
}

/// RFC 9110 §5.6.2 token characters, which a method consists of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preface_and_request_lines_pick_the_protocol() {
        assert_eq!(parse(H2_PREFACE), Outcome::H2c);
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Outcome::Http11);
        assert_eq!(parse(b"POST /x?y=1 HTTP/1.0\r\n"), Outcome::Http10);
        // Envoy reports every other version as HTTP/1.0.
        assert_eq!(parse(b"GET / HTTP/0.9\r\n"), Outcome::Http10);
        // Custom methods are tokens too.
        assert_eq!(parse(b"PURGE /cache HTTP/1.1\n"), Outcome::Http11);
        assert_eq!(Outcome::H2c.alpn(), Some("h2c"));
        assert_eq!(Outcome::Http11.alpn(), Some("http/1.1"));
        assert_eq!(Outcome::Http10.alpn(), Some("http/1.0"));
    }

    #[test]
    fn every_prefix_of_a_request_waits_for_more() {
        for input in [H2_PREFACE, b"GET /index.html HTTP/1.1\r\n"] {
            for n in 1..input.len() - 1 {
                assert_eq!(parse(&input[..n]), Outcome::Incomplete, "{n} bytes");
            }
        }
    }

    #[test]
    fn other_first_lines_are_not_http() {
        for input in [
            &b"\r\nGET / HTTP/1.1\r\n"[..],
            b"\n",
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"GET /\r\n",
            b"GET / HTTP/1.1 extra\r\n",
            b"GET / FTP/1.1\r\n",
            b"GET / HTTP/1.x\r\n",
            b"G(T / HTTP/1.1\r\n",
            b"\x16\x03\x01\x02\x00",
        ] {
            assert_eq!(parse(input), Outcome::NotHttp, "{input:?}");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..5_000 {
            let len = rng.random_range(0..64);
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let _ = parse(&bytes);
        }
    }
}
