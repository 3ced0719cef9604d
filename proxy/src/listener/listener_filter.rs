//! Accept, listener filters: the filters that look at a connection before its filter chain is chosen.
//!
//! Only their configuration lives here; what they do comes with the detect stage.

use envoy_types::pb::envoy::config::listener::v3::{
    listener_filter, listener_filter_chain_match_predicate as predicate,
    ListenerFilter as ListenerFilterProto, ListenerFilterChainMatchPredicate,
};
use envoy_types::pb::envoy::extensions::filters::listener::{
    http_inspector::v3::HttpInspector, original_dst::v3::OriginalDst,
    tls_inspector::v3::TlsInspector as TlsInspectorProto,
};
use prost::Name;

use crate::config::parse::{any_type_name, unpack_any, ParseOptions};
use crate::config::{ConfigError, ConfigErrors, Path};

/// One configured listener filter.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerFilter {
    pub name: String,
    pub kind: ListenerFilterKind,
    /// `filter_disabled`: the filter is skipped for connections this predicate matches.
    pub disabled: Option<Predicate>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ListenerFilterKind {
    /// `envoy.filters.listener.tls_inspector`: SNI, ALPN and transport protocol `tls`.
    TlsInspector(TlsInspector),
    /// `envoy.filters.listener.http_inspector`: `http/1.1` or `h2c` as application protocol.
    HttpInspector,
    /// `envoy.filters.listener.original_dst`: the destination before an iptables redirect.
    OriginalDst,
    /// `istio.set_internal_dst_address` (istio/proxy), on internal listeners: the CONNECT
    /// authority `io.istio.http.connect_authority` shared becomes the connection's local address,
    /// and that host on the captured tunnel port its ORIGINAL_DST target.
    SetInternalDstAddress,
}

impl ListenerFilterKind {
    /// The filters that act on the filter state alone (no bytes read).
    pub fn reads_filter_state(&self) -> bool {
        matches!(
            self,
            ListenerFilterKind::OriginalDst | ListenerFilterKind::SetInternalDstAddress
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInspector {
    pub enable_ja3_fingerprinting: bool,
    pub enable_ja4_fingerprinting: bool,
    /// Bytes read at first to find the ClientHello; Envoy's default is 64 KiB.
    pub initial_read_buffer_size: Option<u32>,
    pub close_connection_on_client_hello_parsing_errors: bool,
    pub max_client_hello_size: Option<u32>,
}

/// `ListenerFilterChainMatchPredicate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Predicate {
    Any,
    /// Destination port in `[start, end)`.
    DestinationPortRange {
        start: i32,
        end: i32,
    },
    Not(Box<Predicate>),
    And(Vec<Predicate>),
    Or(Vec<Predicate>),
}

impl Predicate {
    pub fn matches(&self, destination_port: u16) -> bool {
        match self {
            Predicate::Any => true,
            Predicate::DestinationPortRange { start, end } => {
                let p = i32::from(destination_port);
                *start <= p && p < *end
            }
            Predicate::Not(p) => !p.matches(destination_port),
            Predicate::And(ps) => ps.iter().all(|p| p.matches(destination_port)),
            Predicate::Or(ps) => ps.iter().any(|p| p.matches(destination_port)),
        }
    }

    fn from_proto(p: &ListenerFilterChainMatchPredicate, path: &Path) -> Result<Self, ConfigError> {
        let set = |rules: &[ListenerFilterChainMatchPredicate], field: &str| {
            let p = path.field(field).field("rules");
            rules
                .iter()
                .enumerate()
                .map(|(i, r)| Predicate::from_proto(r, &p.index(i)))
                .collect::<Result<Vec<_>, _>>()
        };
        match &p.rule {
            Some(predicate::Rule::AnyMatch(true)) => Ok(Predicate::Any),
            Some(predicate::Rule::AnyMatch(false)) | None => Err(ConfigError::new(
                path,
                "a predicate needs a rule (any_match must be true)",
            )),
            Some(predicate::Rule::DestinationPortRange(r)) => Ok(Predicate::DestinationPortRange {
                start: r.start,
                end: r.end,
            }),
            Some(predicate::Rule::NotMatch(inner)) => Ok(Predicate::Not(Box::new(
                Predicate::from_proto(inner, &path.field("not_match"))?,
            ))),
            Some(predicate::Rule::AndMatch(s)) => Ok(Predicate::And(set(&s.rules, "and_match")?)),
            Some(predicate::Rule::OrMatch(s)) => Ok(Predicate::Or(set(&s.rules, "or_match")?)),
        }
    }
}

const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
const HTTP_INSPECTOR: &str = "envoy.filters.listener.http_inspector";
const ORIGINAL_DST: &str = "envoy.filters.listener.original_dst";
const SET_INTERNAL_DST_ADDRESS: &str = "istio.set_internal_dst_address";
const SET_INTERNAL_DST_ADDRESS_TYPE: &str = "istio.set_internal_dst_address.v1.Config";

/// Parses one entry of `listener_filters` (`path` names it). Envoy's `ListenerFilter` has no
/// `is_optional`, so a filter remora does not know is always an error.
pub fn from_proto(f: &ListenerFilterProto, path: &Path) -> Result<ListenerFilter, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let disabled = match &f.filter_disabled {
        Some(p) => Predicate::from_proto(p, &path.field("filter_disabled"))
            .map_err(|e| errors.0.push(e))
            .ok(),
        None => None,
    };
    let opts = ParseOptions::default();
    let kind = match &f.config_type {
        Some(listener_filter::ConfigType::ConfigDiscovery(_)) => Err(ConfigError::new(
            path.field("config_discovery"),
            "extension config discovery (ECDS) is not supported yet",
        )),
        // The type URL decides, as in Envoy; the name only when there is no typed_config.
        Some(listener_filter::ConfigType::TypedConfig(any)) => {
            let tpath = path.field("typed_config");
            let ty = any_type_name(any);
            if ty == TlsInspectorProto::full_name() {
                unpack_any::<TlsInspectorProto>(any, opts)
                    .map(|t| ListenerFilterKind::TlsInspector(tls_inspector(&t)))
                    .map_err(|e| ConfigError::new(format!("{path}.{}", e.path), e.message))
            } else if ty == HttpInspector::full_name() {
                Ok(ListenerFilterKind::HttpInspector)
            } else if ty == OriginalDst::full_name() {
                Ok(ListenerFilterKind::OriginalDst)
            } else if ty == SET_INTERNAL_DST_ADDRESS_TYPE {
                Ok(ListenerFilterKind::SetInternalDstAddress)
            } else {
                Err(ConfigError::new(
                    &tpath,
                    format!(
                        "unsupported listener filter type {ty} (filter \"{}\")",
                        f.name
                    ),
                ))
            }
        }
        None => match f.name.as_str() {
            TLS_INSPECTOR => Ok(ListenerFilterKind::TlsInspector(TlsInspector::default())),
            HTTP_INSPECTOR => Ok(ListenerFilterKind::HttpInspector),
            ORIGINAL_DST => Ok(ListenerFilterKind::OriginalDst),
            SET_INTERNAL_DST_ADDRESS => Ok(ListenerFilterKind::SetInternalDstAddress),
            other => Err(ConfigError::new(
                path.field("name"),
                format!("unsupported listener filter \"{other}\" (and no typed_config)"),
            )),
        },
    };
    let kind = kind.map_err(|e| errors.0.push(e)).ok();
    match kind {
        Some(kind) if errors.is_empty() => Ok(ListenerFilter {
            name: f.name.clone(),
            kind,
            disabled,
        }),
        _ => Err(errors),
    }
}

fn tls_inspector(t: &TlsInspectorProto) -> TlsInspector {
    TlsInspector {
        enable_ja3_fingerprinting: t
            .enable_ja3_fingerprinting
            .as_ref()
            .is_some_and(|v| v.value),
        enable_ja4_fingerprinting: t
            .enable_ja4_fingerprinting
            .as_ref()
            .is_some_and(|v| v.value),
        initial_read_buffer_size: t.initial_read_buffer_size.as_ref().map(|v| v.value),
        close_connection_on_client_hello_parsing_errors: t
            .close_connection_on_client_hello_parsing_errors,
        max_client_hello_size: t.max_client_hello_size.as_ref().map(|v| v.value),
    }
}
