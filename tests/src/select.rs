//! Which proxies a suite runs against: `REMORA_TEST_PROXY=envoy|remora|both` (default both).

use crate::bins::{self, ENVOY_SKIP};
use crate::proxy::Kind;

/// The kinds to run, Envoy only when installed (printing the skip line otherwise).
pub fn kinds() -> Vec<Kind> {
    let want = std::env::var("REMORA_TEST_PROXY").unwrap_or_else(|_| "both".into());
    let mut kinds = Vec::new();
    if matches!(want.as_str(), "both" | "envoy") {
        if bins::envoy().is_some() {
            kinds.push(Kind::Envoy);
        } else {
            println!("{ENVOY_SKIP}");
        }
    }
    if matches!(want.as_str(), "both" | "remora") {
        kinds.push(Kind::Remora);
    }
    kinds
}

/// For the differential suite: `REMORA_DIFF_ORACLE_ONLY=1` (or `REMORA_TEST_PROXY=envoy`) runs only
/// Envoy against the encoded expectations.
pub fn diff_kinds() -> Vec<Kind> {
    let oracle_only =
        std::env::var("REMORA_DIFF_ORACLE_ONLY").is_ok_and(|v| v != "0" && !v.is_empty());
    if oracle_only {
        if bins::envoy().is_some() {
            return vec![Kind::Envoy];
        }
        println!("{ENVOY_SKIP}");
        return Vec::new();
    }
    kinds()
}

/// Run `test` once per selected kind, each in its own task so a failing remora run does not hide
/// Envoy's verdict; panics afterwards with every kind's failure.
pub async fn for_each_kind<F, Fut>(test: F)
where
    F: Fn(Kind) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut failures = Vec::new();
    for kind in kinds() {
        if let Err(e) = tokio::spawn(test(kind)).await {
            let msg = match e.try_into_panic() {
                Ok(p) => p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into()),
                Err(e) => e.to_string(),
            };
            failures.push(format!("[{kind}] {msg}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
