//! Route cluster choice: a fixed cluster, one named by a request header, or a weighted split.

use std::borrow::Cow;

use envoy_types::pb::envoy::config::route::v3::{
    weighted_cluster::{
        cluster_weight::HostRewriteSpecifier, ClusterWeight as ClusterWeightProto,
        RandomValueSpecifier,
    },
    WeightedCluster,
};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use rand::Rng;

use super::filter_config::{FilterConfigs, FilterContext};
use super::headers::HeaderMutations;
use super::request::value_str;
use crate::config::{ConfigErrors, Path};

#[derive(Debug, Clone)]
pub(crate) enum ClusterSpecifier {
    Name(String),
    Header(HeaderName),
    Weighted(WeightedClusters),
}

#[derive(Debug, Clone)]
pub(crate) enum Target {
    Name(String),
    Header(HeaderName),
}

/// One arm of a weighted split.
#[derive(Debug, Clone)]
pub struct ClusterWeight {
    target: Target,
    weight: u32,
    pub(crate) request_headers: HeaderMutations,
    pub(crate) response_headers: HeaderMutations,
    pub(crate) host_rewrite_literal: Option<HeaderValue>,
    pub(crate) filter_configs: FilterConfigs,
}

impl ClusterWeight {
    pub fn weight(&self) -> u32 {
        self.weight
    }
    /// The configured cluster name (`None` for a `cluster_header` arm).
    pub fn name(&self) -> Option<&str> {
        match &self.target {
            Target::Name(n) => Some(n),
            Target::Header(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct WeightedClusters {
    clusters: Vec<ClusterWeight>,
    total: u64,
    random_header: Option<HeaderName>,
}

/// The cluster a request goes to, and the weighted arm that chose it (for its header mutations).
#[derive(Debug, Clone)]
pub struct Picked<'a> {
    pub cluster: Cow<'a, str>,
    pub weighted: Option<&'a ClusterWeight>,
}

impl ClusterSpecifier {
    pub(crate) fn pick<'a, R: Rng + ?Sized>(
        &'a self,
        headers: &HeaderMap,
        rng: &mut R,
    ) -> Option<Picked<'a>> {
        match self {
            ClusterSpecifier::Name(n) => Some(Picked {
                cluster: Cow::Borrowed(n),
                weighted: None,
            }),
            ClusterSpecifier::Header(h) => Some(Picked {
                cluster: from_header(headers, h)?,
                weighted: None,
            }),
            ClusterSpecifier::Weighted(w) => {
                let arm = w.pick(headers, rng)?;
                let cluster = match &arm.target {
                    Target::Name(n) => Cow::Borrowed(n.as_str()),
                    Target::Header(h) => from_header(headers, h)?,
                };
                Some(Picked {
                    cluster,
                    weighted: Some(arm),
                })
            }
        }
    }
}

/// The first value of the header; absent or empty means no cluster (the proxy answers with the
/// route's `cluster_not_found_response_code`, 503 by default, as Envoy does).
fn from_header<'a>(headers: &HeaderMap, name: &HeaderName) -> Option<Cow<'a, str>> {
    let v = headers.get(name)?;
    let s = value_str(v);
    (!s.is_empty()).then(|| Cow::Owned(s.into_owned()))
}

impl WeightedClusters {
    #[allow(deprecated)]
    pub(crate) fn from_proto(
        w: &WeightedCluster,
        path: &Path,
        fctx: &FilterContext<'_>,
        errs: &mut ConfigErrors,
    ) -> Option<Self> {
        let cpath = path.field("clusters");
        if w.clusters.is_empty() {
            errs.push(&cpath, "weighted_clusters must name at least one cluster");
            return None;
        }
        let mut clusters = Vec::with_capacity(w.clusters.len());
        for (i, c) in w.clusters.iter().enumerate() {
            if let Some(c) = cluster_weight(c, &cpath.index(i), fctx, errs) {
                clusters.push(c);
            }
        }
        let total: u64 = clusters.iter().map(|c| u64::from(c.weight)).sum();
        if total == 0 && clusters.len() == w.clusters.len() {
            errs.push(
                &cpath,
                "the sum of the cluster weights must be greater than 0",
            );
        }
        if let Some(t) = w.total_weight {
            // Deprecated: Envoy now uses the sum, but still rejects a non-zero total that disagrees.
            if t.value > 0 && u64::from(t.value) != total {
                errs.push(
                    path.field("total_weight"),
                    format!(
                        "the cluster weights add up to {total}, not total_weight {}",
                        t.value
                    ),
                );
            }
        }
        if !w.runtime_key_prefix.is_empty() {
            tracing::warn!(path = %path.field("runtime_key_prefix"), "no runtime layer: the configured weights apply");
        }
        let random_header = match &w.random_value_specifier {
            Some(RandomValueSpecifier::HeaderName(h)) => {
                match HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()) {
                    Ok(h) => Some(h),
                    Err(_) => {
                        errs.push(
                            path.field("header_name"),
                            format!("invalid header name '{h}'"),
                        );
                        None
                    }
                }
            }
            Some(RandomValueSpecifier::UseHashPolicy(b)) if b.value => {
                errs.push(
                    path.field("use_hash_policy"),
                    "picking a weighted cluster by hash policy is not supported",
                );
                None
            }
            _ => None,
        };
        Some(WeightedClusters {
            clusters,
            total,
            random_header,
        })
    }

    fn pick<R: Rng + ?Sized>(&self, headers: &HeaderMap, rng: &mut R) -> Option<&ClusterWeight> {
        if self.total == 0 {
            return None;
        }
        // A numeric random-value header keeps the choice consistent across proxy tiers.
        let random = self
            .random_header
            .as_ref()
            .and_then(|h| headers.get(h))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| rng.random::<u64>());
        let mut point = random % self.total;
        for c in &self.clusters {
            let w = u64::from(c.weight);
            if point < w {
                return Some(c);
            }
            point -= w;
        }
        None
    }
}

fn cluster_weight(
    c: &ClusterWeightProto,
    path: &Path,
    fctx: &FilterContext<'_>,
    errs: &mut ConfigErrors,
) -> Option<ClusterWeight> {
    let target = match (c.name.is_empty(), c.cluster_header.is_empty()) {
        (false, true) => Target::Name(c.name.clone()),
        (true, false) => {
            match HeaderName::from_bytes(c.cluster_header.to_ascii_lowercase().as_bytes()) {
                Ok(h) => Target::Header(h),
                Err(_) => {
                    errs.push(
                        path.field("cluster_header"),
                        format!("invalid header name '{}'", c.cluster_header),
                    );
                    return None;
                }
            }
        }
        (false, false) => {
            errs.push(path, "only one of name and cluster_header may be set");
            return None;
        }
        (true, true) => {
            errs.push(path, "one of name or cluster_header is required");
            return None;
        }
    };
    let host_rewrite_literal = match &c.host_rewrite_specifier {
        Some(HostRewriteSpecifier::HostRewriteLiteral(h)) if !h.is_empty() => {
            match HeaderValue::try_from(h.as_str()) {
                Ok(v) => Some(v),
                Err(_) => {
                    errs.push(
                        path.field("host_rewrite_literal"),
                        format!("invalid host '{h}'"),
                    );
                    None
                }
            }
        }
        _ => None,
    };
    if c.metadata_match.is_some() {
        errs.push(
            path.field("metadata_match"),
            "subset load balancing (metadata_match) is not supported",
        );
    }
    Some(ClusterWeight {
        target,
        weight: c.weight.map(|w| w.value).unwrap_or(0),
        request_headers: HeaderMutations::from_proto(
            &c.request_headers_to_add,
            &c.request_headers_to_remove,
            &path.field("request_headers_to_add"),
            &path.field("request_headers_to_remove"),
            errs,
        ),
        response_headers: HeaderMutations::from_proto(
            &c.response_headers_to_add,
            &c.response_headers_to_remove,
            &path.field("response_headers_to_add"),
            &path.field("response_headers_to_remove"),
            errs,
        ),
        host_rewrite_literal,
        filter_configs: FilterConfigs::from_proto(
            &c.typed_per_filter_config,
            &path.field("typed_per_filter_config"),
            fctx,
            errs,
        ),
    })
}
