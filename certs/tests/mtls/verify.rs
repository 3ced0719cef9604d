//! Who is accepted and who is refused, and how `classify` names each refusal.

use remora_certs::{
    classify, IssueOptions, KeyAlgorithm, SanMatcher, SanMismatch, SanType, StringMatcher,
    TrustBundleSet, UpstreamCertVerifier, VerifyFailure,
};
use rustls::{AlertDescription, Error as TlsError};

use crate::mtls::support::*;

const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/server";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";

/// A listener requiring a client certificate accepted by `matchers`, presenting SERVER_ID.
fn strict_server(
    ca: &remora_certs::DevCa,
    matchers: Vec<SanMatcher>,
) -> std::sync::Arc<rustls::ServerConfig> {
    server(
        bundle_of(ca),
        matchers,
        true,
        resolver(leaf(ca, SERVER_ID)),
        TLS13,
    )
}

fn client_presenting(
    ca: &remora_certs::DevCa,
    key: std::sync::Arc<rustls::sign::CertifiedKey>,
) -> std::sync::Arc<rustls::ClientConfig> {
    client(
        bundle_of(ca),
        vec![SanMatcher::SpiffeId(id(SERVER_ID))],
        Some(resolver(key)),
        TLS13,
    )
}

#[test]
fn mtls_succeeds_between_expected_spiffe_identities() {
    let ca = ca("cluster.local");
    let srv = strict_server(&ca, vec![SanMatcher::SpiffeId(id(CLIENT_ID))]);
    let cli = client_presenting(&ca, leaf(&ca, CLIENT_ID));
    let mut pair = handshake(cli, srv);
    assert!(
        pair.ok(),
        "client {:?} server {:?}",
        pair.client_error,
        pair.server_error
    );
    let client_seen = pair
        .client_cert_info()
        .expect("client presented a certificate");
    assert_eq!(client_seen.spiffe_id(), Some(id(CLIENT_ID)));
    assert_eq!(pair.server_cert_info().spiffe_id(), Some(id(SERVER_ID)));
    assert!(
        pair.server_cert_info().dns_sans().is_empty(),
        "the server cert has no DNS SAN, yet the client accepted it for another hostname"
    );
    pair.exchange(b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n");
}

#[test]
fn a_missing_client_certificate_is_refused_when_required() {
    let ca = ca("cluster.local");
    let srv = strict_server(&ca, Vec::new());
    let cli = client(bundle_of(&ca), Vec::new(), None, TLS13);
    let pair = handshake(cli, srv);
    assert_eq!(pair.server_error(), &TlsError::NoCertificatesPresented);
    let failure = classify(pair.server_error());
    assert_eq!(failure, VerifyFailure::NoCertificate);
    assert_eq!(failure.envoy_stat(), "fail_verify_no_cert");
    // The client learns of it through an alert, which is not its own verification failure.
    assert_eq!(classify(pair.client_error()), VerifyFailure::Other);
}

#[test]
fn a_missing_client_certificate_is_allowed_when_optional() {
    let ca = ca("cluster.local");
    let srv = server(
        bundle_of(&ca),
        Vec::new(),
        false,
        resolver(leaf(&ca, SERVER_ID)),
        TLS13,
    );
    let cli = client(bundle_of(&ca), Vec::new(), None, TLS13);
    let mut pair = handshake(cli, srv);
    assert!(pair.ok(), "server {:?}", pair.server_error);
    assert!(
        pair.client_cert_info().is_none(),
        "counts as ssl.no_certificate"
    );
    pair.exchange(b"ping", b"pong");
}

#[test]
fn an_optional_client_certificate_is_still_verified_when_presented() {
    let ca = ca("cluster.local");
    let stranger = crate::mtls::support::ca("cluster.local");
    let srv = server(
        bundle_of(&ca),
        Vec::new(),
        false,
        resolver(leaf(&ca, SERVER_ID)),
        TLS13,
    );
    let cli = client_presenting(&ca, leaf(&stranger, CLIENT_ID));
    let pair = handshake(cli, srv);
    assert_eq!(classify(pair.server_error()), VerifyFailure::UntrustedChain);
}

#[test]
fn an_expired_client_certificate_is_refused() {
    let ca = ca("cluster.local");
    let srv = strict_server(&ca, vec![SanMatcher::SpiffeId(id(CLIENT_ID))]);
    let cli = client_presenting(&ca, leaf_with(&ca, CLIENT_ID, &expired()));
    let pair = handshake(cli, srv);
    let failure = classify(pair.server_error());
    assert_eq!(failure, VerifyFailure::Expired);
    assert_eq!(failure.envoy_stat(), "fail_verify_error");
    assert_eq!(
        pair.client_error(),
        &TlsError::AlertReceived(AlertDescription::CertificateExpired)
    );
}

#[test]
fn a_client_certificate_from_another_ca_is_refused() {
    let ca = ca("cluster.local");
    let impostor_ca = crate::mtls::support::ca("cluster.local");
    let srv = strict_server(&ca, vec![SanMatcher::SpiffeId(id(CLIENT_ID))]);
    // Same SPIFFE ID, wrong issuer: the chain check must fail before the SAN check passes.
    let cli = client_presenting(&ca, leaf(&impostor_ca, CLIENT_ID));
    let pair = handshake(cli, srv);
    let failure = classify(pair.server_error());
    assert_eq!(failure, VerifyFailure::UntrustedChain);
    assert_eq!(failure.envoy_stat(), "fail_verify_error");
}

#[test]
fn a_client_with_the_wrong_spiffe_identity_is_refused() {
    let ca = ca("cluster.local");
    let srv = strict_server(&ca, vec![SanMatcher::SpiffeId(id(CLIENT_ID))]);
    let cli = client_presenting(
        &ca,
        leaf(&ca, "spiffe://cluster.local/ns/default/sa/intruder"),
    );
    let pair = handshake(cli, srv);
    let failure = classify(pair.server_error());
    assert_eq!(failure, VerifyFailure::SanMismatch);
    assert_eq!(failure.envoy_stat(), "fail_verify_san");
    let TlsError::InvalidCertificate(rustls::CertificateError::Other(other)) = pair.server_error()
    else {
        panic!("unexpected {:?}", pair.server_error());
    };
    let mismatch = other
        .0
        .downcast_ref::<SanMismatch>()
        .expect("SanMismatch inside");
    assert_eq!(
        mismatch.presented(),
        ["spiffe://cluster.local/ns/default/sa/intruder".to_string()]
    );
}

#[test]
fn a_client_from_another_trust_domain_is_refused_by_a_trust_domain_matcher() {
    // Federation: both domains' CAs are trusted, but only cluster.local workloads may connect.
    let home = ca("cluster.local");
    let partner = crate::mtls::support::ca("partner.example");
    let bundles = TrustBundleSet::new()
        .with_domain(td("cluster.local"), home.trust_bundle().expect("bundle"))
        .with_domain(
            td("partner.example"),
            partner.trust_bundle().expect("bundle"),
        );
    let srv = server(
        bundles.clone(),
        vec![SanMatcher::TrustDomain(td("cluster.local"))],
        true,
        resolver(leaf(&home, SERVER_ID)),
        TLS13,
    );
    let partner_client = leaf(&partner, "spiffe://partner.example/ns/default/sa/client");
    let cli = client(
        bundles.clone(),
        Vec::new(),
        Some(resolver(partner_client)),
        TLS13,
    );
    let pair = handshake(cli, srv.clone());
    assert_eq!(classify(pair.server_error()), VerifyFailure::SanMismatch);

    let home_client = leaf(&home, CLIENT_ID);
    let cli = client(bundles, Vec::new(), Some(resolver(home_client)), TLS13);
    assert!(handshake(cli, srv).ok());
}

#[test]
fn a_trust_domain_without_a_bundle_is_untrusted_even_if_the_issuer_is_trusted_elsewhere() {
    let home = ca("cluster.local");
    let partner = crate::mtls::support::ca("partner.example");
    // partner.example's CA is only trusted for cluster.local (a misconfiguration): its own
    // workloads must not be accepted through that bundle, nor through a default.
    let bundles = TrustBundleSet::new()
        .with_domain(td("cluster.local"), partner.trust_bundle().expect("bundle"));
    let srv = server(
        bundles,
        Vec::new(),
        true,
        resolver(leaf(&home, SERVER_ID)),
        TLS13,
    );
    let cli = client_presenting(
        &home,
        leaf(&partner, "spiffe://partner.example/ns/default/sa/client"),
    );
    let pair = handshake(cli, srv);
    assert_eq!(classify(pair.server_error()), VerifyFailure::UntrustedChain);
}

#[test]
fn the_client_refuses_a_server_with_the_wrong_identity() {
    let ca = ca("cluster.local");
    let srv = server(
        bundle_of(&ca),
        Vec::new(),
        false,
        resolver(leaf(
            &ca,
            "spiffe://cluster.local/ns/default/sa/not-the-server",
        )),
        TLS13,
    );
    let cli = client_presenting(&ca, leaf(&ca, CLIENT_ID));
    let pair = handshake(cli, srv);
    let failure = classify(pair.client_error());
    assert_eq!(failure, VerifyFailure::SanMismatch);
    assert_eq!(failure.envoy_stat(), "fail_verify_san");
}

#[test]
fn the_client_refuses_an_expired_or_foreign_server_certificate() {
    let ca = ca("cluster.local");
    let cli = client_presenting(&ca, leaf(&ca, CLIENT_ID));
    let expired_srv = server(
        bundle_of(&ca),
        Vec::new(),
        false,
        resolver(leaf_with(&ca, SERVER_ID, &expired())),
        TLS13,
    );
    assert_eq!(
        classify(handshake(cli.clone(), expired_srv).client_error()),
        VerifyFailure::Expired
    );

    let stranger = crate::mtls::support::ca("cluster.local");
    let foreign_srv = server(
        bundle_of(&ca),
        Vec::new(),
        false,
        resolver(leaf(&stranger, SERVER_ID)),
        TLS13,
    );
    assert_eq!(
        classify(handshake(cli, foreign_srv).client_error()),
        VerifyFailure::UntrustedChain
    );
}

#[test]
fn hostname_checking_is_opt_in_and_yields_to_san_matchers() {
    let ca = ca("cluster.local");
    let opts = IssueOptions {
        dns_names: vec!["upstream.example.invalid".to_string()],
        ..IssueOptions::default()
    };
    let named = server(
        bundle_of(&ca),
        Vec::new(),
        false,
        resolver(leaf_with(&ca, SERVER_ID, &opts)),
        TLS13,
    );
    let unnamed = server(
        bundle_of(&ca),
        Vec::new(),
        false,
        resolver(leaf(&ca, SERVER_ID)),
        TLS13,
    );
    let checking = |matchers| {
        let verifier = UpstreamCertVerifier::builder(bundle_of(&ca))
            .san_matchers(matchers)
            .verify_server_name(true)
            .build()
            .expect("verifier");
        std::sync::Arc::new(remora_certs::client_config(TLS13, verifier, None).expect("config"))
    };
    assert!(handshake(checking(Vec::new()), named).ok());
    let pair = handshake(checking(Vec::new()), unnamed.clone());
    assert_eq!(classify(pair.client_error()), VerifyFailure::BadCertificate);
    // With a SAN matcher the matcher is the identity check and the hostname is not consulted.
    let by_identity = checking(vec![SanMatcher::typed(
        SanType::Uri,
        StringMatcher::exact(SERVER_ID),
    )]);
    assert!(handshake(by_identity, unnamed).ok());
}

#[test]
fn tls12_is_refused_when_the_minimum_is_tls13() {
    let ca = ca("cluster.local");
    let srv = strict_server(&ca, Vec::new());
    let tls12_only = client(
        bundle_of(&ca),
        Vec::new(),
        Some(resolver(leaf(&ca, CLIENT_ID))),
        &[&rustls::version::TLS12],
    );
    let pair = handshake(tls12_only, srv);
    assert!(
        matches!(pair.server_error(), TlsError::PeerIncompatible(_)),
        "{:?}",
        pair.server_error()
    );
    assert_eq!(
        classify(pair.server_error()).envoy_stat(),
        "connection_error"
    );
}

#[test]
fn mtls_works_over_tls12_when_allowed() {
    let ca = ca("cluster.local");
    let srv = server(
        bundle_of(&ca),
        vec![SanMatcher::SpiffeId(id(CLIENT_ID))],
        true,
        resolver(leaf(&ca, SERVER_ID)),
        ANY_TLS,
    );
    let cli = client(
        bundle_of(&ca),
        vec![SanMatcher::SpiffeId(id(SERVER_ID))],
        Some(resolver(leaf(&ca, CLIENT_ID))),
        &[&rustls::version::TLS12],
    );
    let mut pair = handshake(cli, srv);
    assert!(
        pair.ok(),
        "client {:?} server {:?}",
        pair.client_error,
        pair.server_error
    );
    assert_eq!(
        pair.server.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    pair.exchange(b"over", b"tls12");
}

#[test]
fn ed25519_identities_work_end_to_end() {
    let ca = remora_certs::DevCa::generate(
        &td("cluster.local"),
        &remora_certs::DevCaOptions {
            key_algorithm: KeyAlgorithm::Ed25519,
            ..Default::default()
        },
    )
    .expect("ed25519 CA");
    let opts = IssueOptions {
        key_algorithm: KeyAlgorithm::Ed25519,
        ..IssueOptions::default()
    };
    let srv = server(
        bundle_of(&ca),
        vec![SanMatcher::SpiffeId(id(CLIENT_ID))],
        true,
        resolver(leaf_with(&ca, SERVER_ID, &opts)),
        TLS13,
    );
    let cli = client_presenting(&ca, leaf_with(&ca, CLIENT_ID, &opts));
    assert!(handshake(cli, srv).ok());
}

#[test]
fn a_domain_with_its_own_bundle_never_falls_back_to_the_default() {
    let home = ca("cluster.local");
    // A second CA for the same trust domain, trusted only as the default bundle.
    let rogue = crate::mtls::support::ca("cluster.local");
    let bundles = TrustBundleSet::new()
        .with_domain(td("cluster.local"), home.trust_bundle().expect("bundle"))
        .with_default(rogue.trust_bundle().expect("bundle"));
    let srv = server(
        bundles,
        Vec::new(),
        true,
        resolver(leaf(&home, SERVER_ID)),
        TLS13,
    );
    let cli = client_presenting(&home, leaf(&rogue, CLIENT_ID));
    let pair = handshake(cli, srv);
    assert_eq!(classify(pair.server_error()), VerifyFailure::UntrustedChain);
}

#[test]
fn a_verifier_needs_at_least_one_bundle() {
    let err = remora_certs::DownstreamCertVerifier::builder(TrustBundleSet::new())
        .build()
        .expect_err("empty");
    assert!(err.to_string().contains("no trust bundle"), "{err}");
    assert!(UpstreamCertVerifier::builder(TrustBundleSet::new())
        .build()
        .is_err());
}
