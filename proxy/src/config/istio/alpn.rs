//! Istio's `istio.alpn` HTTP filter (`istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig`)
//! → the ALPN lists an upstream TLS handshake offers instead of the cluster's `alpn_protocols`, by
//! the HTTP version the request goes upstream with. istiod puts it on outbound connection managers
//! so that the peer sidecar's inbound listener picks its HTTP chain (`istio-http/1.1`, `istio-h2`).

use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use prost::Name;

use super::unpack;
use crate::config::parse::any_type_name;
use crate::config::{ConfigErrors, ParseOptions, Path};

/// The filter name istiod gives it.
pub const ALPN_FILTER: &str = "istio.alpn";

/// `istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AlpnFilterConfig {
    #[prost(message, repeated, tag = "1")]
    pub alpn_override: Vec<AlpnOverride>,
}

/// `FilterConfig.AlpnOverride`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AlpnOverride {
    /// `FilterConfig.Protocol`: HTTP10 = 0, HTTP11 = 1, HTTP2 = 2.
    #[prost(int32, tag = "1")]
    pub upstream_protocol: i32,
    #[prost(string, repeated, tag = "2")]
    pub alpn_override: Vec<String>,
}

impl Name for AlpnFilterConfig {
    const NAME: &'static str = "FilterConfig";
    const PACKAGE: &'static str = "istio.envoy.config.filter.http.alpn.v2alpha1";
}

/// The HTTP version a request goes upstream with, as the override table is keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamHttp {
    Http10 = 0,
    Http11 = 1,
    Http2 = 2,
}

/// One ALPN list, as offered in the ClientHello (also the pool key of its connections).
pub type AlpnList = Arc<[Vec<u8>]>;

/// The validated filter: the list to offer per upstream HTTP version, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlpnOverrides {
    by_protocol: [Option<AlpnList>; 3],
}

impl AlpnOverrides {
    /// The list for a request going upstream as `protocol`; `None` keeps the cluster's ALPN.
    pub fn for_upstream(&self, protocol: UpstreamHttp) -> Option<&AlpnList> {
        self.by_protocol[protocol as usize].as_ref()
    }
}

/// Whether an HTTP filter is `istio.alpn` (by name or the type inside its `Any`).
pub fn is_alpn(name: &str, any: Option<&Any>) -> bool {
    name == ALPN_FILTER || any.is_some_and(|a| any_type_name(a) == AlpnFilterConfig::full_name())
}

/// `istio.alpn` at `path` (the filter). As in Istio's filter, the first entry for a protocol wins
/// and an empty list leaves that protocol's ALPN alone.
pub fn alpn(
    any: Option<&Any>,
    path: &Path,
    opts: ParseOptions,
) -> Result<AlpnOverrides, ConfigErrors> {
    let c: AlpnFilterConfig = unpack(any, path, opts)?;
    let value = path.field("typed_config").field("alpn_override");
    let mut errors = ConfigErrors::default();
    let mut lists: [Option<Vec<Vec<u8>>>; 3] = Default::default();
    for (i, entry) in c.alpn_override.iter().enumerate() {
        let epath = value.index(i);
        let Some(slot) = usize::try_from(entry.upstream_protocol)
            .ok()
            .and_then(|p| lists.get_mut(p))
        else {
            errors.push(
                epath.field("upstream_protocol"),
                format!("unknown upstream protocol {}", entry.upstream_protocol),
            );
            continue;
        };
        for (j, p) in entry.alpn_override.iter().enumerate() {
            if p.is_empty() || p.len() > 255 {
                errors.push(
                    epath.field("alpn_override").index(j),
                    "an ALPN protocol name is 1 to 255 bytes long",
                );
            }
        }
        if slot.is_none() {
            *slot = Some(
                entry
                    .alpn_override
                    .iter()
                    .map(|p| p.as_bytes().to_vec())
                    .collect(),
            );
        }
    }
    errors.finish(())?;
    Ok(AlpnOverrides {
        by_protocol: lists.map(|l| l.filter(|l| !l.is_empty()).map(AlpnList::from)),
    })
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;

    use super::*;
    use crate::config::parse::from_yaml;

    /// The connection manager's `istio.alpn`, or the errors of its filters.
    fn overrides(filter: &str) -> Result<Option<Arc<AlpnOverrides>>, String> {
        let yaml = format!(
            "stat_prefix: t\nhttp_filters:\n- {filter}\n- {{ name: envoy.filters.http.router, typed_config: {{ '@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }} }}\n"
        );
        let opts = ParseOptions::default();
        let hcm: HttpConnectionManager = from_yaml(&yaml, opts).map_err(|e| e.to_string())?;
        let mut errors = ConfigErrors::default();
        let (istio, _) =
            crate::config::http_filters::check(&hcm, &Path::root("hcm"), opts, 0, &mut errors);
        errors.finish(istio.alpn).map_err(|e| e.to_string())
    }

    fn list(l: Option<&AlpnList>) -> Vec<&str> {
        l.map(|l| {
            l.iter()
                .map(|p| std::str::from_utf8(p).expect("utf-8"))
                .collect()
        })
        .unwrap_or_default()
    }

    const ISTIOD: &str = "{ name: istio.alpn, typed_config: { '@type': type.googleapis.com/udpa.type.v1.TypedStruct, type_url: type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig, value: { alpn_override: [ { alpn_override: [istio-http/1.0, istio] }, { upstream_protocol: HTTP11, alpn_override: [istio-http/1.1, istio] }, { upstream_protocol: HTTP2, alpn_override: [istio-h2, istio] } ] } } }";

    #[test]
    fn istiods_filter_maps_each_upstream_version() {
        let o = overrides(ISTIOD).expect("valid").expect("configured");
        assert_eq!(
            list(o.for_upstream(UpstreamHttp::Http10)),
            ["istio-http/1.0", "istio"]
        );
        assert_eq!(
            list(o.for_upstream(UpstreamHttp::Http11)),
            ["istio-http/1.1", "istio"]
        );
        assert_eq!(
            list(o.for_upstream(UpstreamHttp::Http2)),
            ["istio-h2", "istio"]
        );
    }

    #[test]
    fn the_first_entry_of_a_protocol_wins_and_an_empty_list_overrides_nothing() {
        // The second entry has no upstreamProtocol, so it is HTTP10's again and ignored.
        let filter = "{ name: istio.alpn, typed_config: { '@type': type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig, alpnOverride: [ { alpnOverride: [istio-http/1.0, istio], upstreamProtocol: HTTP10 }, { alpnOverride: [istio-http/1.1, istio] }, { upstreamProtocol: HTTP2, alpnOverride: [] } ] } }";
        let o = overrides(filter).expect("valid").expect("configured");
        assert_eq!(
            list(o.for_upstream(UpstreamHttp::Http10)),
            ["istio-http/1.0", "istio"]
        );
        assert!(o.for_upstream(UpstreamHttp::Http11).is_none());
        assert!(o.for_upstream(UpstreamHttp::Http2).is_none());
    }

    #[test]
    fn errors_name_the_field() {
        let typo = ISTIOD.replace("upstream_protocol: HTTP2", "upstream_protocl: HTTP2");
        let e = overrides(&typo).expect_err("unknown field");
        assert!(e.contains("upstream_protocl"), "{e}");
        let bad = ISTIOD.replace("upstream_protocol: HTTP2", "upstream_protocol: HTTP3");
        let e = overrides(&bad).expect_err("unknown enum value");
        assert!(e.contains("HTTP3"), "{e}");
        let empty = ISTIOD.replace("[istio-h2, istio]", "['', istio]");
        let e = overrides(&empty).expect_err("empty protocol");
        assert!(
            e.contains("http_filters[0].typed_config.alpn_override[2].alpn_override[0]"),
            "{e}"
        );
    }

    #[test]
    fn a_disabled_filter_overrides_nothing() {
        let disabled = ISTIOD.replacen("{ name:", "{ disabled: true, name:", 1);
        assert_eq!(overrides(&disabled).expect("valid"), None);
    }
}
