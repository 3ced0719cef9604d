use std::net::IpAddr;

use rcgen::{CertificateParams, KeyPair, SanType as RcgenSan};

use super::*;

fn cert_with(sans: Vec<RcgenSan>) -> CertInfo {
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("cert");
    CertInfo::parse("test", 0, cert.der()).expect("parse")
}

fn uri(s: &str) -> RcgenSan {
    RcgenSan::URI(s.try_into().expect("ia5"))
}

fn dns(s: &str) -> RcgenSan {
    RcgenSan::DnsName(s.try_into().expect("ia5"))
}

fn workload() -> CertInfo {
    cert_with(vec![uri("spiffe://cluster.local/ns/default/sa/web")])
}

#[test]
fn spiffe_forms_match_identity_domain_and_prefix() {
    let cert = workload();
    let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").expect("id");
    assert!(SanMatcher::SpiffeId(id).matches(&cert));
    let other = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/db").expect("id");
    assert!(!SanMatcher::SpiffeId(other).matches(&cert));

    let td = TrustDomain::new("cluster.local").expect("td");
    assert!(SanMatcher::TrustDomain(td).matches(&cert));
    let foreign = TrustDomain::new("cluster.local.evil").expect("td");
    assert!(!SanMatcher::TrustDomain(foreign).matches(&cert));

    assert!(SanMatcher::SpiffePrefix("spiffe://cluster.local/ns/default/".into()).matches(&cert));
    assert!(
        !SanMatcher::SpiffePrefix("spiffe://cluster.local/ns/kube-system/".into()).matches(&cert)
    );
}

#[test]
fn two_spiffe_uris_make_no_identity() {
    let cert = cert_with(vec![
        uri("spiffe://cluster.local/ns/a/sa/x"),
        uri("spiffe://cluster.local/ns/b/sa/y"),
    ]);
    assert_eq!(cert.spiffe_id(), None);
    let td = TrustDomain::new("cluster.local").expect("td");
    assert!(!SanMatcher::TrustDomain(td).matches(&cert));
    // A typed URI matcher still sees every URI, as Envoy's does.
    let typed = SanMatcher::typed(SanType::Uri, StringMatcher::suffix("/sa/y"));
    assert!(typed.matches(&cert));
}

#[test]
fn typed_string_matchers_follow_envoy() {
    let cert = workload();
    let m = |sm| SanMatcher::typed(SanType::Uri, sm);
    assert!(m(StringMatcher::exact(
        "spiffe://cluster.local/ns/default/sa/web"
    ))
    .matches(&cert));
    assert!(!m(StringMatcher::exact(
        "SPIFFE://cluster.local/ns/default/sa/web"
    ))
    .matches(&cert));
    assert!(
        m(StringMatcher::exact("SPIFFE://CLUSTER.local/ns/default/sa/web").ignore_case(true))
            .matches(&cert)
    );
    assert!(m(StringMatcher::prefix("spiffe://cluster.local/")).matches(&cert));
    assert!(m(StringMatcher::suffix("/SA/WEB").ignore_case(true)).matches(&cert));
    assert!(m(StringMatcher::contains("/ns/default/")).matches(&cert));
    assert!(!m(StringMatcher::contains("/ns/prod/")).matches(&cert));
    // safe_regex is a full match: a pattern matching only part of the SAN is not enough.
    let full = StringMatcher::safe_regex(r"spiffe://cluster\.local/ns/[a-z]+/sa/web").expect("re");
    assert!(m(full).matches(&cert));
    let partial = StringMatcher::safe_regex(r"ns/default").expect("re");
    assert!(!m(partial).matches(&cert));
    // ...and ignore_case does not apply to it.
    let upper = StringMatcher::safe_regex(r"SPIFFE://.*")
        .expect("re")
        .ignore_case(true);
    assert!(!m(upper).matches(&cert));
}

#[test]
fn a_bad_regex_names_the_pattern() {
    let err = StringMatcher::safe_regex("spiffe://(").expect_err("bad");
    assert!(err.to_string().contains("\"spiffe://(\""), "{err}");
}

#[test]
fn san_types_do_not_cross() {
    let cert = cert_with(vec![dns("web.default.svc")]);
    let as_uri = SanMatcher::typed(SanType::Uri, StringMatcher::exact("web.default.svc"));
    assert!(!as_uri.matches(&cert));
    let as_dns = SanMatcher::typed(SanType::Dns, StringMatcher::exact("web.default.svc"));
    assert!(as_dns.matches(&cert));
}

#[test]
fn dns_exact_matching_honours_certificate_wildcards() {
    let cert = cert_with(vec![dns("*.example.com"), dns("api-*.internal.test")]);
    let exact = |name: &str| SanMatcher::typed(SanType::Dns, StringMatcher::exact(name));
    assert!(exact("www.example.com").matches(&cert));
    assert!(
        exact("WWW.Example.COM").matches(&cert),
        "DNS is case-insensitive"
    );
    assert!(!exact("a.b.example.com").matches(&cert), "one label only");
    assert!(!exact("example.com").matches(&cert));
    assert!(exact("api-v1.internal.test").matches(&cert));
    assert!(!exact("web-v1.internal.test").matches(&cert));
    // Other matcher kinds compare the SAN text literally.
    let prefix = SanMatcher::typed(SanType::Dns, StringMatcher::prefix("*.example"));
    assert!(prefix.matches(&cert));
}

#[test]
fn email_and_ip_sans_are_matched_in_text_form() {
    let v6: IpAddr = "2001:db8::1".parse().expect("ip");
    let cert = cert_with(vec![
        RcgenSan::Rfc822Name("ops@example.com".try_into().expect("ia5")),
        RcgenSan::IpAddress("10.1.2.3".parse().expect("ip")),
        RcgenSan::IpAddress(v6),
    ]);
    let email = SanMatcher::typed(SanType::Email, StringMatcher::suffix("@example.com"));
    assert!(email.matches(&cert));
    let ip4 = SanMatcher::typed(SanType::IpAddress, StringMatcher::exact("10.1.2.3"));
    assert!(ip4.matches(&cert));
    let ip6 = SanMatcher::typed(SanType::IpAddress, StringMatcher::exact("2001:db8::1"));
    assert!(ip6.matches(&cert));
    let net = SanMatcher::typed(SanType::IpAddress, StringMatcher::prefix("10.1."));
    assert!(net.matches(&cert));
}

#[test]
fn a_certificate_without_sans_fails_any_matcher() {
    let cert = cert_with(Vec::new());
    assert!(!cert.has_sans());
    let anything = SanMatcher::typed(SanType::Uri, StringMatcher::safe_regex(".*").expect("re"));
    assert!(!any_match(&[anything], &cert));
    assert!(
        any_match(&[], &cert),
        "no matchers configured accepts any verified chain"
    );
}
