//! TLS, stats: Envoy's `ssl.*` counters of a listener or cluster, and its socket factory's
//! `ssl_context_update_by_sds` / `*_context_secrets_not_ready`.

use remora_certs::VerifyFailure;
use rustls::{CipherSuite, CommonState, NamedGroup, ProtocolVersion};

use super::params::{cipher_name, Side};
use crate::stats::{Counter, Scope};

const CIPHERS: &[CipherSuite] = &[
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// Key-exchange groups rustls offers, in BoringSSL's names.
const CURVES: &[(NamedGroup, &str)] = &[
    (NamedGroup::X25519, "X25519"),
    (NamedGroup::secp256r1, "P-256"),
    (NamedGroup::secp384r1, "P-384"),
    (NamedGroup::X25519MLKEM768, "X25519MLKEM768"),
];

/// Signature schemes of the certificates remora verifies, in BoringSSL's names.
const SIGALGS: &[&str] = &[
    "ecdsa_secp256r1_sha256",
    "ecdsa_secp384r1_sha384",
    "ed25519",
    "rsa_pss_rsae_sha256",
];

#[derive(Debug, Clone, Default)]
pub struct TlsStats {
    pub handshake: Counter,
    pub connection_error: Counter,
    pub fail_verify_san: Counter,
    pub fail_verify_error: Counter,
    pub fail_verify_no_cert: Counter,
    pub no_certificate: Counter,
    pub tls12: Counter,
    pub tls13: Counter,
    ciphers: Vec<(CipherSuite, Counter)>,
    curves: Vec<(NamedGroup, Counter)>,
    sigalgs: Vec<(&'static str, Counter)>,
    pub context_update_by_sds: Counter,
    pub secrets_not_ready: Counter,
}

impl TlsStats {
    /// The stats under a listener's or cluster's scope (`listener.127.0.0.1_8443.`, `cluster.web.`).
    pub fn new(scope: &Scope, side: Side) -> Self {
        let ssl = scope.scope("ssl.");
        let (factory, not_ready) = match side {
            Side::Server => (
                "server_ssl_socket_factory.",
                "downstream_context_secrets_not_ready",
            ),
            Side::Client => (
                "client_ssl_socket_factory.",
                "upstream_context_secrets_not_ready",
            ),
        };
        let factory = scope.scope(factory);
        Self {
            handshake: ssl.counter("handshake"),
            connection_error: ssl.counter("connection_error"),
            fail_verify_san: ssl.counter("fail_verify_san"),
            fail_verify_error: ssl.counter("fail_verify_error"),
            fail_verify_no_cert: ssl.counter("fail_verify_no_cert"),
            no_certificate: ssl.counter("no_certificate"),
            tls12: ssl.counter("versions.TLSv1.2"),
            tls13: ssl.counter("versions.TLSv1.3"),
            ciphers: CIPHERS
                .iter()
                .map(|c| (*c, ssl.counter(&format!("ciphers.{}", cipher_name(*c)))))
                .collect(),
            curves: CURVES
                .iter()
                .map(|(g, name)| (*g, ssl.counter(&format!("curves.{name}"))))
                .collect(),
            sigalgs: SIGALGS
                .iter()
                .map(|name| (*name, ssl.counter(&format!("sigalgs.{name}"))))
                .collect(),
            context_update_by_sds: factory.counter("ssl_context_update_by_sds"),
            secrets_not_ready: factory.counter(not_ready),
        }
    }

    /// Counts a failed handshake as Envoy does: a verification failure moves only its own counter,
    /// anything else `connection_error`.
    pub fn failed(&self, failure: VerifyFailure) {
        match failure {
            VerifyFailure::NoCertificate => self.fail_verify_no_cert.inc(),
            VerifyFailure::SanMismatch => self.fail_verify_san.inc(),
            VerifyFailure::Other => self.connection_error.inc(),
            _ => self.fail_verify_error.inc(),
        }
    }

    /// Counts a completed handshake: version, cipher, key-exchange group (`curves.X25519`) and the
    /// peer's signature scheme (`sigalgs.ecdsa_secp256r1_sha256`, when it presented a certificate).
    pub fn succeeded(&self, conn: &CommonState, peer_scheme: Option<&str>) {
        self.handshake.inc();
        match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_2) => self.tls12.inc(),
            Some(ProtocolVersion::TLSv1_3) => self.tls13.inc(),
            _ => {}
        }
        let suite = conn.negotiated_cipher_suite().map(|s| s.suite());
        if let Some((_, c)) = suite.and_then(|s| self.ciphers.iter().find(|(cs, _)| *cs == s)) {
            c.inc();
        }
        let group = conn.negotiated_key_exchange_group().map(|g| g.name());
        if let Some((_, c)) = group.and_then(|g| self.curves.iter().find(|(n, _)| *n == g)) {
            c.inc();
        }
        if let Some((_, c)) = peer_scheme.and_then(|p| self.sigalgs.iter().find(|(n, _)| *n == p)) {
            c.inc();
        }
    }
}

/// Envoy's spelling of a protocol version (`%DOWNSTREAM_TLS_VERSION%`).
pub fn version_name(v: Option<ProtocolVersion>) -> &'static str {
    match v {
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
        _ => "unknown",
    }
}
