//! Balance configuration: `lb_policy`, `load_balancing_policy` and `common_lb_config`.

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    common_lb_config::LocalityConfigSpecifier, LbConfig, LbPolicy as PbLbPolicy,
};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::extensions::load_balancing_policies::least_request::v3::LeastRequest;
use tracing::warn;

use crate::config::parse::{unpack_any, ParseOptions};
use crate::config::{ConfigErrors, Path};

/// How a host is picked among the healthy hosts of the chosen priority (and locality).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LbPolicy {
    RoundRobin,
    /// Power of `choice_count` choices by active requests (equal weights); with unequal weights, a
    /// pick proportional to `weight / (active + 1)^bias`.
    LeastRequest {
        choice_count: u32,
        active_request_bias: f64,
    },
    Random,
}

const ROUND_ROBIN: &str = "envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin";
const LEAST_REQUEST: &str =
    "envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest";
const RANDOM: &str = "envoy.extensions.load_balancing_policies.random.v3.Random";

/// The policy, whether locality weights apply, and the panic threshold in percent.
pub(super) fn from_cluster(
    c: &Cluster,
    path: &Path,
    errs: &mut ConfigErrors,
) -> (LbPolicy, bool, f64) {
    let mut policy = match PbLbPolicy::try_from(c.lb_policy) {
        Ok(PbLbPolicy::RoundRobin) => LbPolicy::RoundRobin,
        Ok(PbLbPolicy::Random) => LbPolicy::Random,
        Ok(PbLbPolicy::LeastRequest) => {
            let cfg = match &c.lb_config {
                Some(LbConfig::LeastRequestLbConfig(l)) => Some(l),
                _ => None,
            };
            let choice_count = cfg
                .and_then(|l| l.choice_count)
                .map(|v| v.value)
                .unwrap_or(2);
            if choice_count < 2 {
                errs.push(
                    path.field("least_request_lb_config").field("choice_count"),
                    "value must be greater than or equal to 2",
                );
            }
            LbPolicy::LeastRequest {
                choice_count,
                active_request_bias: cfg
                    .and_then(|l| l.active_request_bias.as_ref())
                    .map(|b| b.default_value)
                    .unwrap_or(1.0),
            }
        }
        Ok(PbLbPolicy::LoadBalancingPolicyConfig) => LbPolicy::RoundRobin,
        // The cluster picks the host itself (ORIGINAL_DST; the pairing is checked with the type).
        Ok(PbLbPolicy::ClusterProvided) => LbPolicy::RoundRobin,
        Ok(other) => {
            errs.push(
                path.field("lb_policy"),
                format!("lb_policy {} is not supported yet", other.as_str_name()),
            );
            LbPolicy::RoundRobin
        }
        Err(_) => {
            errs.push(
                path.field("lb_policy"),
                format!("unknown lb_policy {}", c.lb_policy),
            );
            LbPolicy::RoundRobin
        }
    };

    if let Some(lbp) = &c.load_balancing_policy {
        // Envoy takes the first policy it has an implementation for.
        let p = path.field("load_balancing_policy").field("policies");
        let mut chosen = None;
        for (i, entry) in lbp.policies.iter().enumerate() {
            let Some(any) = entry
                .typed_extension_config
                .as_ref()
                .and_then(|t| t.typed_config.as_ref())
            else {
                continue;
            };
            let ep = p.index(i).field("typed_extension_config");
            match super::type_of(any).as_str() {
                ROUND_ROBIN => chosen = Some(LbPolicy::RoundRobin),
                RANDOM => chosen = Some(LbPolicy::Random),
                LEAST_REQUEST => match unpack_any::<LeastRequest>(any, ParseOptions::default()) {
                    Ok(l) => {
                        chosen = Some(LbPolicy::LeastRequest {
                            choice_count: l.choice_count.map(|v| v.value).unwrap_or(2).max(2),
                            active_request_bias: l
                                .active_request_bias
                                .as_ref()
                                .map(|b| b.default_value)
                                .unwrap_or(1.0),
                        })
                    }
                    Err(e) => errs.push(ep.field(&e.path), e.message),
                },
                _ => continue,
            }
            break;
        }
        match chosen {
            Some(c) => policy = c,
            None => errs.push(
                &p,
                "none of the load balancing policies is supported yet (round_robin, least_request, random are)",
            ),
        }
    } else if c.lb_policy == PbLbPolicy::LoadBalancingPolicyConfig as i32 {
        errs.push(
            path.field("load_balancing_policy"),
            "lb_policy LOAD_BALANCING_POLICY_CONFIG needs load_balancing_policy",
        );
    }

    if let Some(LbConfig::RoundRobinLbConfig(r)) = &c.lb_config {
        if r.slow_start_config.is_some() {
            warn!(cluster = %c.name, path = %path.field("round_robin_lb_config").field("slow_start_config"), "slow start is ignored");
        }
    }

    let mut locality_weighted = false;
    let mut panic = 50.0;
    if let Some(common) = &c.common_lb_config {
        let cp = path.field("common_lb_config");
        if let Some(t) = &common.healthy_panic_threshold {
            // Envoy truncates the threshold to whole percents.
            panic = t.value.clamp(0.0, 100.0).trunc();
        }
        match &common.locality_config_specifier {
            Some(LocalityConfigSpecifier::LocalityWeightedLbConfig(_)) => locality_weighted = true,
            Some(LocalityConfigSpecifier::ZoneAwareLbConfig(_)) => {
                warn!(cluster = %c.name, path = %cp.field("zone_aware_lb_config"), "zone aware routing needs a local cluster; ignored")
            }
            None => {}
        }
    }
    (policy, locality_weighted, panic)
}
