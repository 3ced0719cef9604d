//! Route header values: Envoy command operators (`%DOWNSTREAM_REMOTE_ADDRESS%`, `%REQ(x)%`, ...)
//! parsed at config time and expanded per request from [`HeaderVars`].

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::SystemTime;

use http::header::{HeaderMap, HeaderName, HOST};
use http::Version;

use super::request::joined;
use crate::access_log::format::time::TimeFormat;

/// What header values may refer to, supplied by the proxy for each request.
#[derive(Debug, Clone, Default)]
pub struct HeaderVars<'a> {
    pub downstream_remote: Option<SocketAddr>,
    pub downstream_local: Option<SocketAddr>,
    /// Known on the response path once an upstream host was picked.
    pub upstream_remote: Option<SocketAddr>,
    pub protocol: Option<Version>,
    pub start_time: Option<SystemTime>,
    /// The request headers, for `%REQ(x)%` on the response path.
    pub request_headers: Option<&'a HeaderMap>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Addr {
    DownstreamRemote,
    DownstreamLocal,
    UpstreamRemote,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddrPart {
    Full,
    Ip,
    Port,
}

#[derive(Debug, Clone)]
enum Op {
    Address(Addr, AddrPart),
    Protocol,
    StartTime(TimeFormat),
    /// `%REQ(main?alt):max%` / `%RESP(...)%`.
    Header {
        response: bool,
        main: HeaderName,
        alt: Option<HeaderName>,
        max: Option<usize>,
    },
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Op(Op),
}

/// A parsed header value template.
#[derive(Debug, Clone)]
pub(crate) struct Formatter {
    segments: Vec<Segment>,
}

impl Formatter {
    /// Whether rendering reads request headers (`%REQ(...)%`).
    pub(crate) fn reads_request_headers(&self) -> bool {
        self.segments.iter().any(|s| {
            matches!(
                s,
                Segment::Op(Op::Header {
                    response: false,
                    ..
                })
            )
        })
    }
}

/// The header maps a template reads besides [`HeaderVars`].
pub(crate) struct FormatContext<'a, 'v> {
    pub(crate) vars: &'a HeaderVars<'v>,
    pub(crate) request: Option<&'a HeaderMap>,
    pub(crate) response: Option<&'a HeaderMap>,
}

impl Formatter {
    /// Parses `%NAME%`, `%NAME(args)%`, `%NAME(args):N%` and `%%` as Envoy's substitution parser does.
    pub(crate) fn parse(s: &str) -> Result<Formatter, String> {
        let mut segments = Vec::new();
        let mut lit = String::new();
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'%' {
                let next = s[i..].find('%').map_or(s.len(), |n| i + n);
                lit.push_str(&s[i..next]);
                i = next;
                continue;
            }
            if bytes.get(i + 1) == Some(&b'%') {
                lit.push('%');
                i += 2;
                continue;
            }
            let (op, len) = parse_command(&s[i..])?;
            if !lit.is_empty() {
                segments.push(Segment::Literal(std::mem::take(&mut lit)));
            }
            segments.push(Segment::Op(op));
            i += len;
        }
        if !lit.is_empty() {
            segments.push(Segment::Literal(lit));
        }
        Ok(Formatter { segments })
    }

    /// The value when it contains no command operator.
    pub(crate) fn constant(&self) -> Option<&str> {
        match self.segments.as_slice() {
            [] => Some(""),
            [Segment::Literal(s)] => Some(s),
            _ => None,
        }
    }

    pub(crate) fn format(&self, ctx: &FormatContext<'_, '_>) -> String {
        let mut out = String::new();
        for seg in &self.segments {
            match seg {
                Segment::Literal(s) => out.push_str(s),
                Segment::Op(op) => format_op(op, ctx, &mut out),
            }
        }
        out
    }
}

/// Parses one `%...%` command at the start of `s`; returns it and its length in bytes.
fn parse_command(s: &str) -> Result<(Op, usize), String> {
    let bad = || format!("invalid command operator at '{s}'");
    let b = s.as_bytes();
    let mut i = 1;
    while i < b.len() && (b[i].is_ascii_uppercase() || b[i].is_ascii_digit() || b[i] == b'_') {
        i += 1;
    }
    let name = &s[1..i];
    if name.is_empty() {
        return Err(bad());
    }
    let mut arg = None;
    if b.get(i) == Some(&b'(') {
        let close = s[i..].find(')').ok_or_else(bad)? + i;
        arg = Some(&s[i + 1..close]);
        i = close + 1;
    }
    let mut max = None;
    if b.get(i) == Some(&b':') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        max = Some(s[start..i].parse::<usize>().map_err(|_| bad())?);
    }
    if b.get(i) != Some(&b'%') {
        return Err(bad());
    }
    let op = command(name, arg, max)?;
    Ok((op, i + 1))
}

fn command(name: &str, arg: Option<&str>, max: Option<usize>) -> Result<Op, String> {
    use {Addr::*, AddrPart::*};
    let no_arg = |op: Op| match (arg, max) {
        (None, None) => Ok(op),
        _ => Err(format!("command operator %{name}% takes no arguments")),
    };
    match name {
        "DOWNSTREAM_REMOTE_ADDRESS" => no_arg(Op::Address(DownstreamRemote, Full)),
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => no_arg(Op::Address(DownstreamRemote, Ip)),
        "DOWNSTREAM_REMOTE_PORT" => no_arg(Op::Address(DownstreamRemote, Port)),
        "DOWNSTREAM_LOCAL_ADDRESS" => no_arg(Op::Address(DownstreamLocal, Full)),
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => no_arg(Op::Address(DownstreamLocal, Ip)),
        "DOWNSTREAM_LOCAL_PORT" => no_arg(Op::Address(DownstreamLocal, Port)),
        "UPSTREAM_REMOTE_ADDRESS" => no_arg(Op::Address(UpstreamRemote, Full)),
        "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => no_arg(Op::Address(UpstreamRemote, Ip)),
        "UPSTREAM_REMOTE_PORT" => no_arg(Op::Address(UpstreamRemote, Port)),
        "PROTOCOL" => no_arg(Op::Protocol),
        "START_TIME" => {
            let fmt = match arg.filter(|a| !a.is_empty()) {
                Some(f) => TimeFormat::parse(f)?,
                None => TimeFormat::envoy_default(),
            };
            Ok(Op::StartTime(fmt))
        }
        "REQ" | "RESP" => {
            let arg = arg.ok_or_else(|| format!("%{name}(header)% needs a header name"))?;
            let (main, alt) = match arg.split_once('?') {
                Some((m, a)) => (m, Some(a)),
                None => (arg, None),
            };
            let header = |h: &str| {
                HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("invalid header name '{h}' in %{name}%"))
            };
            let main = if main.eq_ignore_ascii_case(":authority") {
                HOST
            } else {
                header(main)?
            };
            let alt = alt.map(header).transpose()?;
            Ok(Op::Header {
                response: name == "RESP",
                main,
                alt,
                max,
            })
        }
        _ => Err(format!("unsupported command operator %{name}%")),
    }
}

fn format_op(op: &Op, ctx: &FormatContext<'_, '_>, out: &mut String) {
    match op {
        Op::Address(which, part) => {
            let addr = match which {
                Addr::DownstreamRemote => ctx.vars.downstream_remote,
                Addr::DownstreamLocal => ctx.vars.downstream_local,
                Addr::UpstreamRemote => ctx.vars.upstream_remote,
            };
            // An unknown value expands to nothing, so the header is skipped unless keep_empty_value.
            if let Some(a) = addr {
                let _ = match part {
                    AddrPart::Full => write!(out, "{a}"),
                    AddrPart::Ip => write!(out, "{}", a.ip()),
                    AddrPart::Port => write!(out, "{}", a.port()),
                };
            }
        }
        Op::Protocol => out.push_str(match ctx.vars.protocol {
            Some(Version::HTTP_09) => "HTTP/0.9",
            Some(Version::HTTP_10) => "HTTP/1.0",
            Some(Version::HTTP_11) => "HTTP/1.1",
            Some(Version::HTTP_2) => "HTTP/2",
            Some(Version::HTTP_3) => "HTTP/3",
            _ => "",
        }),
        Op::StartTime(fmt) => {
            if let Some(t) = ctx.vars.start_time {
                fmt.format(t, out);
            }
        }
        Op::Header {
            response,
            main,
            alt,
            max,
        } => {
            let map = if *response { ctx.response } else { ctx.request };
            let Some(map) = map else { return };
            let v = joined(map, main).or_else(|| alt.as_ref().and_then(|a| joined(map, a)));
            if let Some(v) = v {
                let v: &str = &v;
                match max {
                    Some(n) if v.len() > *n => {
                        let mut end = *n;
                        while !v.is_char_boundary(end) {
                            end -= 1;
                        }
                        out.push_str(&v[..end]);
                    }
                    _ => out.push_str(v),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn render(tmpl: &str, vars: &HeaderVars<'_>, req: Option<&HeaderMap>) -> String {
        let f = Formatter::parse(tmpl).expect("parses");
        f.format(&FormatContext {
            vars,
            request: req,
            response: None,
        })
    }

    #[test]
    fn expands_addresses_protocol_and_literals() {
        let vars = HeaderVars {
            downstream_remote: Some("10.1.2.3:5555".parse().expect("addr")),
            downstream_local: Some("[::1]:80".parse().expect("addr")),
            protocol: Some(Version::HTTP_2),
            ..Default::default()
        };
        assert_eq!(
            render("%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% 100%% %PROTOCOL%", &vars, None),
            "10.1.2.3:5555 10.1.2.3 100% HTTP/2"
        );
        assert_eq!(
            render("%DOWNSTREAM_LOCAL_ADDRESS%", &vars, None),
            "[::1]:80"
        );
        assert_eq!(render("%UPSTREAM_REMOTE_ADDRESS%", &vars, None), "");
    }

    #[test]
    fn start_time_uses_envoy_default_format() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let vars = HeaderVars {
            start_time: Some(t),
            ..Default::default()
        };
        assert_eq!(
            render("%START_TIME%", &vars, None),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(render("%START_TIME(%s)%", &vars, None), "1700000000");
    }

    #[test]
    fn req_reads_first_then_alternative_and_truncates() {
        let mut h = HeaderMap::new();
        h.insert("x-b", "fallback".parse().expect("value"));
        let vars = HeaderVars::default();
        assert_eq!(render("%REQ(x-a?x-b)%", &vars, Some(&h)), "fallback");
        assert_eq!(render("%REQ(x-b):4%", &vars, Some(&h)), "fall");
        assert_eq!(render("%REQ(x-missing)%", &vars, Some(&h)), "");
    }

    #[test]
    fn rejects_unknown_and_malformed_operators() {
        assert!(Formatter::parse("%NOPE%").is_err());
        assert!(Formatter::parse("%DOWNSTREAM_REMOTE_ADDRESS").is_err());
        assert!(Formatter::parse("%REQ%").is_err());
        assert!(Formatter::parse("%START_TIME(%Q)%").is_err());
        assert_eq!(
            Formatter::parse("plain").expect("ok").constant(),
            Some("plain")
        );
    }
}
