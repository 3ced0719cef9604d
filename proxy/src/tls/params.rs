//! TLS, parameters: Envoy's `TlsParameters` (protocol versions, TLS 1.2 cipher suites, curves) as
//! the rustls crypto provider and version list a context is built with.

use std::sync::Arc;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    tls_parameters::TlsProtocol, TlsParameters,
};
use rustls::crypto::ring::{cipher_suite as cs, default_provider, kx_group};
use rustls::crypto::CryptoProvider;
use rustls::{CipherSuite, SupportedCipherSuite, SupportedProtocolVersion};

use crate::config::{ConfigErrors, Path};

/// Which end of the connection a context is for; the defaults differ, as in Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Server,
    Client,
}

/// The provider and versions of one context.
#[derive(Debug, Clone)]
pub struct Params {
    pub provider: Arc<CryptoProvider>,
    pub versions: Vec<&'static SupportedProtocolVersion>,
}

/// BoringSSL's names for the TLS 1.2 suites rustls implements.
const TLS12_SUITES: &[(&str, SupportedCipherSuite)] = &[
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// The name Envoy's `ssl.ciphers.<name>` stat uses for a suite.
pub fn cipher_name(suite: CipherSuite) -> &'static str {
    match suite {
        CipherSuite::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        other => TLS12_SUITES
            .iter()
            .find(|(_, s)| s.suite() == other)
            .map_or("unknown", |(n, _)| n),
    }
}

fn version_of(v: i32) -> Option<TlsProtocol> {
    TlsProtocol::try_from(v).ok()
}

/// Translates `tls_params` (absent: Envoy's defaults for `side`).
pub fn build(
    p: Option<&TlsParameters>,
    side: Side,
    path: &Path,
    errs: &mut ConfigErrors,
) -> Params {
    let default = TlsParameters::default();
    let p = p.unwrap_or(&default);
    let mut provider = default_provider();

    let min = match version_of(p.tls_minimum_protocol_version) {
        Some(TlsProtocol::TlSv13) => 13,
        Some(TlsProtocol::TlSv10) | Some(TlsProtocol::TlSv11) => {
            // rustls speaks nothing older than 1.2; refusing 1.0/1.1 is stricter, never weaker.
            tracing::warn!(path = %path.field("tls_minimum_protocol_version"), "TLS 1.0 and 1.1 are not supported; the minimum is TLSv1_2");
            12
        }
        _ => 12,
    };
    let max = match version_of(p.tls_maximum_protocol_version) {
        Some(TlsProtocol::TlSv12) => 12,
        Some(TlsProtocol::TlSv13) => 13,
        Some(TlsProtocol::TlSv10) | Some(TlsProtocol::TlSv11) => {
            errs.push(
                path.field("tls_maximum_protocol_version"),
                "TLS versions below TLSv1_2 are not supported",
            );
            13
        }
        // Envoy's defaults: TLSv1_3 for servers, TLSv1_2 for clients.
        _ => match side {
            Side::Server => 13,
            Side::Client => 12,
        },
    };
    if min > max {
        errs.push(
            path.field("tls_minimum_protocol_version"),
            "the minimum protocol version is above the maximum",
        );
    }
    let mut versions = Vec::new();
    if min <= 12 && max >= 12 {
        versions.push(&rustls::version::TLS12);
    }
    if max >= 13 {
        versions.push(&rustls::version::TLS13);
    }

    if !p.cipher_suites.is_empty() {
        let mut tls12 = Vec::new();
        let cpath = path.field("cipher_suites");
        for (i, entry) in p.cipher_suites.iter().enumerate() {
            // BoringSSL's `[A|B]` groups list equally preferred suites.
            let names = entry.trim_start_matches('[').trim_end_matches(']');
            for name in names.split('|').map(str::trim) {
                match TLS12_SUITES.iter().find(|(n, _)| *n == name) {
                    Some((_, s)) => tls12.push(*s),
                    None => errs.push(
                        cpath.index(i),
                        format!(
                            "unsupported cipher suite \"{name}\" (supported: {})",
                            TLS12_SUITES
                                .iter()
                                .map(|(n, _)| *n)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ),
                }
            }
        }
        // The setting has no effect on TLS 1.3, whose suites stay enabled (as in Envoy).
        provider
            .cipher_suites
            .retain(|s| s.version() == &rustls::version::TLS13);
        provider.cipher_suites.extend(tls12);
    }
    if !p.ecdh_curves.is_empty() {
        let mut groups = Vec::new();
        for (i, c) in p.ecdh_curves.iter().enumerate() {
            match c.as_str() {
                "X25519" => groups.push(kx_group::X25519),
                "P-256" => groups.push(kx_group::SECP256R1),
                "P-384" => groups.push(kx_group::SECP384R1),
                other => errs.push(
                    path.field("ecdh_curves").index(i),
                    format!("unsupported curve \"{other}\" (supported: X25519, P-256, P-384)"),
                ),
            }
        }
        provider.kx_groups = groups;
    }
    if !p.signature_algorithms.is_empty() {
        errs.push(
            path.field("signature_algorithms"),
            "restricting signature algorithms is not supported",
        );
    }
    if !p.compliance_policies.is_empty() {
        errs.push(
            path.field("compliance_policies"),
            "compliance policies are not supported",
        );
    }
    Params {
        provider: Arc::new(provider),
        versions,
    }
}
