//! Command operators (`%REQ(:PATH)%`, `%DURATION%`, ...): parsing one, and reading its value.

use std::borrow::Cow;
use std::net::SocketAddr;

use super::time::TimeFormat;
use crate::access_log::context::LogContext;
use crate::listener::internal::INTERNAL_ADDRESS;
use crate::tls::TlsInfo;

/// How Envoy prints the remote address of an internal listener's connection.
const INTERNAL_CLIENT_ADDRESS: &str = "envoy://internal_client_address/";

/// One command operator, resolved at configuration time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    StartTime(TimeFormat),
    /// `REQ(main?alt)`: `alt` is read when `main` is absent. Names are lower-cased.
    Req(String, Option<String>),
    Resp(String, Option<String>),
    Trailer(String, Option<String>),
    Protocol,
    ResponseCode,
    ResponseCodeDetails,
    ResponseFlags,
    ResponseFlagsLong,
    BytesReceived,
    BytesSent,
    Duration,
    RequestDuration,
    ResponseDuration,
    UpstreamHost,
    UpstreamCluster,
    /// `UPSTREAM_REMOTE_ADDRESS[_WITHOUT_PORT]`, `UPSTREAM_REMOTE_PORT`.
    UpstreamRemoteAddress(AddrPart),
    /// `UPSTREAM_LOCAL_ADDRESS[_WITHOUT_PORT]`, `UPSTREAM_LOCAL_PORT`.
    UpstreamLocalAddress(AddrPart),
    UpstreamTransportFailureReason,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    DownstreamRemotePort,
    DownstreamLocalAddress,
    DownstreamLocalAddressWithoutPort,
    DownstreamLocalPort,
    DownstreamDirectRemoteAddress,
    DownstreamDirectRemoteAddressWithoutPort,
    DownstreamDirectRemotePort,
    RequestedServerName,
    RouteName,
    UpstreamRequestAttemptCount,
    ConnectionId,
    ConnectionTerminationDetails,
    /// The machine's host name, read once.
    Hostname(String),
    /// A fact of the downstream or upstream TLS connection.
    Tls(TlsSide, TlsField),
    /// `FILTER_STATE(KEY[:PLAIN|:TYPED])`: an object's value, as a string or (TYPED, the
    /// default) as its JSON serialization.
    FilterState(String, bool),
}

/// Which part of an address an operator prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrPart {
    /// `ip:port`.
    Full,
    /// `ip`.
    WithoutPort,
    /// The port, a number in JSON.
    Port,
}

impl AddrPart {
    fn value<'a>(self, a: Option<SocketAddr>) -> Value<'a> {
        let Some(a) = a else {
            return Value::Missing;
        };
        match self {
            AddrPart::Full => Value::Str(Cow::Owned(a.to_string())),
            AddrPart::WithoutPort => Value::Str(Cow::Owned(a.ip().to_string())),
            AddrPart::Port => Value::Num(a.port().into()),
        }
    }

    /// An `envoy://` address (internal listeners): no IP, so no port; Envoy prints the port
    /// operators as nothing in text and null in JSON.
    fn internal<'a>(self, uri: &'a str) -> Value<'a> {
        match self {
            AddrPart::Port => Value::Empty,
            AddrPart::Full | AddrPart::WithoutPort => Value::Str(Cow::Borrowed(uri)),
        }
    }
}

/// Which connection a TLS operator reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsSide {
    Downstream,
    Upstream,
}

/// What a `%DOWNSTREAM_…%` / `%UPSTREAM_…%` TLS operator prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsField {
    Version,
    Cipher,
    PeerUriSan,
    PeerDnsSan,
    PeerSubject,
    PeerSerial,
    PeerFingerprint256,
    LocalUriSan,
}

impl TlsField {
    /// The operator's name after its `DOWNSTREAM_`/`UPSTREAM_` prefix. Envoy has no upstream
    /// serial or fingerprint operators.
    fn parse(side: TlsSide, suffix: &str) -> Option<TlsField> {
        let field = match suffix {
            "TLS_VERSION" => TlsField::Version,
            "TLS_CIPHER" => TlsField::Cipher,
            "PEER_URI_SAN" => TlsField::PeerUriSan,
            "PEER_DNS_SAN" => TlsField::PeerDnsSan,
            "PEER_SUBJECT" => TlsField::PeerSubject,
            "LOCAL_URI_SAN" => TlsField::LocalUriSan,
            "PEER_SERIAL" if side == TlsSide::Downstream => TlsField::PeerSerial,
            "PEER_FINGERPRINT_256" if side == TlsSide::Downstream => TlsField::PeerFingerprint256,
            _ => return None,
        };
        Some(field)
    }

    /// Envoy prints `-` for a connection without TLS, without a peer certificate, or whose value
    /// is empty; lists are comma separated.
    fn value(self, tls: Option<&TlsInfo>) -> Option<String> {
        let tls = tls?;
        let peer = || tls.peer.as_ref();
        let v = match self {
            TlsField::Version => tls.version.to_string(),
            TlsField::Cipher => tls.cipher.to_string(),
            TlsField::PeerUriSan => peer()?.uri_sans.join(","),
            TlsField::PeerDnsSan => peer()?.dns_sans.join(","),
            TlsField::PeerSubject => peer()?.subject.clone(),
            TlsField::PeerSerial => peer()?.serial.clone(),
            TlsField::PeerFingerprint256 => peer()?.sha256.clone(),
            TlsField::LocalUriSan => tls.local_uri_sans.join(","),
        };
        Some(v).filter(|v| !v.is_empty())
    }
}

/// What an operator yields for one stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// Printed `-` in text, `null` (or left out) in JSON.
    Missing,
    /// Printed as nothing in text, `null` (or left out) in JSON.
    Empty,
    Str(Cow<'a, str>),
    /// Stays a number in JSON formats.
    Num(u64),
}

fn header_args(name: &str, arg: Option<&str>) -> Result<(String, Option<String>), String> {
    let arg = arg
        .filter(|a| !a.is_empty())
        .ok_or_else(|| format!("{name} requires a header name"))?;
    let (main, alt) = match arg.split_once('?') {
        Some((m, a)) => (m, Some(a.to_ascii_lowercase())),
        None => (arg, None),
    };
    if main.is_empty() || alt.as_deref() == Some("") {
        return Err(format!("{name}({arg}): empty header name"));
    }
    Ok((main.to_ascii_lowercase(), alt))
}

fn filter_state_args(arg: Option<&str>) -> Result<Operator, String> {
    let arg = arg.unwrap_or_default();
    let (key, plain) = match arg.rsplit_once(':') {
        Some((k, "PLAIN")) => (k, true),
        Some((k, "TYPED")) => (k, false),
        Some((_, other)) => {
            return Err(format!(
            "FILTER_STATE({arg}): serialization type {other:?} is not supported (PLAIN or TYPED)"
        ))
        }
        None => (arg, false),
    };
    if key.is_empty() {
        return Err("FILTER_STATE requires a key".to_string());
    }
    Ok(Operator::FilterState(key.to_string(), plain))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

impl Operator {
    /// `name` is the operator's name (`REQ`), `arg` what was inside its parentheses.
    pub fn parse(name: &str, arg: Option<&str>) -> Result<Operator, String> {
        let no_arg = |op: Operator| match arg {
            None => Ok(op),
            Some(_) => Err(format!("{name} takes no argument")),
        };
        match name {
            "START_TIME" => match arg.filter(|a| !a.is_empty()) {
                None => Ok(Operator::StartTime(TimeFormat::envoy_default())),
                Some(spec) => TimeFormat::parse(spec).map(Operator::StartTime),
            },
            "REQ" => header_args(name, arg).map(|(m, a)| Operator::Req(m, a)),
            "RESP" => header_args(name, arg).map(|(m, a)| Operator::Resp(m, a)),
            "TRAILER" => header_args(name, arg).map(|(m, a)| Operator::Trailer(m, a)),
            "PROTOCOL" => no_arg(Operator::Protocol),
            "RESPONSE_CODE" => no_arg(Operator::ResponseCode),
            "RESPONSE_CODE_DETAILS" => no_arg(Operator::ResponseCodeDetails),
            "RESPONSE_FLAGS" => no_arg(Operator::ResponseFlags),
            "RESPONSE_FLAGS_LONG" => no_arg(Operator::ResponseFlagsLong),
            "BYTES_RECEIVED" => no_arg(Operator::BytesReceived),
            "BYTES_SENT" => no_arg(Operator::BytesSent),
            "DURATION" => no_arg(Operator::Duration),
            "REQUEST_DURATION" => no_arg(Operator::RequestDuration),
            "RESPONSE_DURATION" => no_arg(Operator::ResponseDuration),
            "UPSTREAM_HOST" => no_arg(Operator::UpstreamHost),
            "UPSTREAM_REMOTE_ADDRESS" => no_arg(Operator::UpstreamRemoteAddress(AddrPart::Full)),
            "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => {
                no_arg(Operator::UpstreamRemoteAddress(AddrPart::WithoutPort))
            }
            "UPSTREAM_REMOTE_PORT" => no_arg(Operator::UpstreamRemoteAddress(AddrPart::Port)),
            "UPSTREAM_CLUSTER" => no_arg(Operator::UpstreamCluster),
            // The cluster's name even when it has an alt_stat_name (remora logs the name for both).
            "UPSTREAM_CLUSTER_RAW" => no_arg(Operator::UpstreamCluster),
            "UPSTREAM_LOCAL_ADDRESS" => no_arg(Operator::UpstreamLocalAddress(AddrPart::Full)),
            "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => {
                no_arg(Operator::UpstreamLocalAddress(AddrPart::WithoutPort))
            }
            "UPSTREAM_LOCAL_PORT" => no_arg(Operator::UpstreamLocalAddress(AddrPart::Port)),
            "UPSTREAM_TRANSPORT_FAILURE_REASON" => no_arg(Operator::UpstreamTransportFailureReason),
            "DOWNSTREAM_REMOTE_ADDRESS" => no_arg(Operator::DownstreamRemoteAddress),
            "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => {
                no_arg(Operator::DownstreamRemoteAddressWithoutPort)
            }
            "DOWNSTREAM_REMOTE_PORT" => no_arg(Operator::DownstreamRemotePort),
            "DOWNSTREAM_LOCAL_ADDRESS" => no_arg(Operator::DownstreamLocalAddress),
            "DOWNSTREAM_LOCAL_PORT" => no_arg(Operator::DownstreamLocalPort),
            "DOWNSTREAM_DIRECT_REMOTE_PORT" => no_arg(Operator::DownstreamDirectRemotePort),
            "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => {
                no_arg(Operator::DownstreamLocalAddressWithoutPort)
            }
            "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => no_arg(Operator::DownstreamDirectRemoteAddress),
            "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT" => {
                no_arg(Operator::DownstreamDirectRemoteAddressWithoutPort)
            }
            "REQUESTED_SERVER_NAME" => no_arg(Operator::RequestedServerName),
            "ROUTE_NAME" => no_arg(Operator::RouteName),
            "UPSTREAM_REQUEST_ATTEMPT_COUNT" => no_arg(Operator::UpstreamRequestAttemptCount),
            "CONNECTION_ID" => no_arg(Operator::ConnectionId),
            "CONNECTION_TERMINATION_DETAILS" => no_arg(Operator::ConnectionTerminationDetails),
            "HOSTNAME" => no_arg(Operator::Hostname(hostname())),
            "FILTER_STATE" => filter_state_args(arg),
            _ => {
                let tls = if let Some(rest) = name.strip_prefix("DOWNSTREAM_") {
                    TlsField::parse(TlsSide::Downstream, rest).map(|f| (TlsSide::Downstream, f))
                } else if let Some(rest) = name.strip_prefix("UPSTREAM_") {
                    TlsField::parse(TlsSide::Upstream, rest).map(|f| (TlsSide::Upstream, f))
                } else {
                    None
                };
                match tls {
                    Some((side, field)) => no_arg(Operator::Tls(side, field)),
                    None => Err(format!("unknown command operator %{name}%")),
                }
            }
        }
    }

    pub fn value<'a>(&self, ctx: &LogContext<'a>) -> Value<'a> {
        let s = |v: Option<&'a str>| v.map_or(Value::Missing, |v| Value::Str(Cow::Borrowed(v)));
        let owned = |v: Option<String>| v.map_or(Value::Missing, |v| Value::Str(Cow::Owned(v)));
        let addr = |a: Option<SocketAddr>| owned(a.map(|a| a.to_string()));
        let ip = |a: Option<SocketAddr>| owned(a.map(|a| a.ip().to_string()));
        let ms = |d: Option<std::time::Duration>| {
            d.map_or(Value::Missing, |d| {
                Value::Num(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            })
        };
        let header = |main: &str, alt: &Option<String>, get: &dyn Fn(&str) -> Option<String>| {
            owned(get(main).or_else(|| alt.as_deref().and_then(get)))
        };
        match self {
            Operator::StartTime(f) => {
                let mut out = String::new();
                f.format(ctx.start_time, &mut out);
                Value::Str(Cow::Owned(out))
            }
            Operator::Req(m, a) => header(m, a, &|n| ctx.request_header(n)),
            Operator::Resp(m, a) => header(m, a, &|n| ctx.response_header(n)),
            Operator::Trailer(m, a) => header(m, a, &|n| ctx.response_trailer(n)),
            Operator::Protocol => s(ctx.protocol),
            // Envoy prints 0 for "no response", TCP streams included.
            Operator::ResponseCode => Value::Num(ctx.response_code.unwrap_or(0).into()),
            Operator::ResponseCodeDetails => s(ctx.response_code_details),
            // Envoy prints `-` for "no flags" even in JSON, where it is a string, not null.
            Operator::ResponseFlags if ctx.response_flags.is_empty() => {
                Value::Str(Cow::Borrowed("-"))
            }
            Operator::ResponseFlags => Value::Str(Cow::Borrowed(ctx.response_flags)),
            Operator::ResponseFlagsLong if ctx.response_flags.is_empty() => {
                Value::Str(Cow::Borrowed("-"))
            }
            Operator::ResponseFlagsLong => {
                let long: Vec<&str> = ctx
                    .response_flags
                    .split(',')
                    .map(|f| super::super::filter::long_flag(f).unwrap_or(f))
                    .collect();
                Value::Str(Cow::Owned(long.join(",")))
            }
            Operator::BytesReceived => Value::Num(ctx.bytes_received),
            Operator::BytesSent => Value::Num(ctx.bytes_sent),
            Operator::Duration => ms(ctx.duration),
            Operator::RequestDuration => ms(ctx.request_duration),
            Operator::ResponseDuration => ms(ctx.response_duration),
            Operator::UpstreamHost => match ctx.upstream_internal {
                Some(uri) => Value::Str(Cow::Borrowed(uri)),
                None => addr(ctx.upstream_host),
            },
            Operator::UpstreamCluster => s(ctx.upstream_cluster),
            // Set only once a connection was made: Envoy prints `-` on a connect failure, where
            // `%UPSTREAM_HOST%` still names the host.
            Operator::UpstreamRemoteAddress(part) => match ctx.upstream_internal {
                Some(uri) if ctx.upstream_local_address.is_some() => part.internal(uri),
                _ => part.value(ctx.upstream_local_address.and(ctx.upstream_host)),
            },
            Operator::UpstreamLocalAddress(part) => match ctx.upstream_internal {
                Some(_) if ctx.upstream_local_address.is_some() => {
                    part.internal(INTERNAL_CLIENT_ADDRESS)
                }
                _ => part.value(ctx.upstream_local_address),
            },
            // Envoy replaces the spaces of the reason so that it stays one field of a text line.
            Operator::UpstreamTransportFailureReason => owned(
                ctx.upstream_transport_failure_reason
                    .filter(|r| !r.is_empty())
                    .map(|r| r.replace(' ', "_")),
            ),
            // An internal connection's addresses, unless its listener's original_dst restored them.
            Operator::DownstreamRemotePort | Operator::DownstreamDirectRemotePort
                if ctx.downstream_internal.is_some()
                    && ctx.downstream_direct_remote_address == Some(INTERNAL_ADDRESS) =>
            {
                Value::Empty
            }
            Operator::DownstreamLocalPort
                if ctx.downstream_internal.is_some()
                    && ctx.downstream_local_address == Some(INTERNAL_ADDRESS) =>
            {
                Value::Empty
            }
            Operator::DownstreamRemoteAddress
            | Operator::DownstreamRemoteAddressWithoutPort
            | Operator::DownstreamDirectRemoteAddress
            | Operator::DownstreamDirectRemoteAddressWithoutPort
                if ctx.downstream_internal.is_some()
                    && ctx.downstream_direct_remote_address == Some(INTERNAL_ADDRESS) =>
            {
                Value::Str(Cow::Borrowed(INTERNAL_CLIENT_ADDRESS))
            }
            Operator::DownstreamLocalAddress | Operator::DownstreamLocalAddressWithoutPort
                if ctx.downstream_internal.is_some()
                    && ctx.downstream_local_address == Some(INTERNAL_ADDRESS) =>
            {
                owned(ctx.downstream_internal.map(|l| format!("envoy://{l}/")))
            }
            Operator::DownstreamRemoteAddress => addr(ctx.downstream_remote_address),
            Operator::DownstreamRemoteAddressWithoutPort => ip(ctx.downstream_remote_address),
            Operator::DownstreamRemotePort => AddrPart::Port.value(ctx.downstream_remote_address),
            Operator::DownstreamLocalPort => AddrPart::Port.value(ctx.downstream_local_address),
            Operator::DownstreamDirectRemotePort => {
                AddrPart::Port.value(ctx.downstream_direct_remote_address)
            }
            Operator::DownstreamLocalAddress => addr(ctx.downstream_local_address),
            Operator::DownstreamLocalAddressWithoutPort => ip(ctx.downstream_local_address),
            Operator::DownstreamDirectRemoteAddress => addr(ctx.downstream_direct_remote_address),
            Operator::DownstreamDirectRemoteAddressWithoutPort => {
                ip(ctx.downstream_direct_remote_address)
            }
            Operator::RequestedServerName => s(ctx.requested_server_name.filter(|n| !n.is_empty())),
            Operator::RouteName => s(ctx.route_name.filter(|n| !n.is_empty())),
            Operator::UpstreamRequestAttemptCount => ctx
                .upstream_request_attempt_count
                .map_or(Value::Missing, |n| Value::Num(n.into())),
            Operator::ConnectionId => ctx.connection_id.map_or(Value::Missing, Value::Num),
            Operator::ConnectionTerminationDetails => s(ctx.connection_termination_details),
            Operator::Hostname(h) if h.is_empty() => Value::Missing,
            Operator::Hostname(h) => Value::Str(Cow::Owned(h.clone())),
            Operator::FilterState(key, plain) => owned(
                ctx.filter_state
                    .and_then(|fs| fs.get(key))
                    .map(|o| o.value.plain())
                    .map(|v| {
                        if *plain {
                            v
                        } else {
                            serde_json::Value::String(v).to_string()
                        }
                    }),
            ),
            Operator::Tls(side, field) => owned(field.value(match side {
                TlsSide::Downstream => ctx.downstream_tls,
                TlsSide::Upstream => ctx.upstream_tls,
            })),
        }
    }
}
