//! Translation of DownstreamTlsContext / UpstreamTlsContext: every unsupported security setting is
//! an error that names its path.

use std::time::Duration;

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;

use super::{ca, issue, q};
use crate::access_log::Writers;
use crate::config::bootstrap::build;
use crate::config::parse::{from_yaml, ParseOptions};
use crate::stats::Store;

const CTX: &str = "static_resources.listeners[0].filter_chains[0].transport_socket.typed_config";

fn bootstrap(listener_tls: &str, cluster_tls: &str) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - name: l
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: t
          cluster: c
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
{listener_tls}
  clusters:
  - name: c
    load_assignment:
      cluster_name: c
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 1 }} }} }}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
{cluster_tls}
"#
    )
}

fn errors(yaml: &str) -> Vec<String> {
    let store = Store::new();
    let writers = Writers::new(&store, Duration::from_secs(1));
    let b: Bootstrap = from_yaml(yaml, ParseOptions::default()).expect("yaml");
    match build(b, &store, ParseOptions::default(), &writers) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

/// A server certificate, indented for the listener's typed_config.
fn server_cert() -> String {
    let ca = ca("td");
    let c = issue(&ca, "spiffe://td/server");
    format!(
        "          common_tls_context:\n            tls_certificates:\n            - certificate_chain: {{ inline_string: {} }}\n              private_key: {{ inline_string: {} }}\n",
        q(&c.chain_pem),
        q(&c.key_pem)
    )
}

fn has(errs: &[String], want: &str) -> bool {
    errs.iter().any(|e| e.starts_with(want))
}

#[test]
fn a_valid_tls_listener_and_cluster_translate() {
    let errs = errors(&bootstrap(&server_cert(), "        sni: up.example"));
    assert!(errs.is_empty(), "{errs:?}");
}

#[test]
fn unsupported_cipher_suites_name_their_index() {
    let listener = format!(
        "{}            tls_params:\n              cipher_suites: [\"[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-RSA-AES128-GCM-SHA256]\", AES128-SHA]\n",
        server_cert()
    );
    let errs = errors(&bootstrap(&listener, ""));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(has(&errs, &format!("{CTX}.common_tls_context.tls_params.cipher_suites[1]: unsupported cipher suite \"AES128-SHA\"")), "{errs:?}");
}

#[test]
fn verification_loosening_fields_are_refused() {
    let ca = ca("td");
    let listener = format!(
        "{}            validation_context:\n              trusted_ca: {{ inline_string: {} }}\n              trust_chain_verification: ACCEPT_UNTRUSTED\n              verify_certificate_spki: [\"NvqYIYSbgK2vCJpQhObf77vv+bQWtc5ek5RIOwPiC9A=\"]\n              crl: {{ inline_string: x }}\n          ocsp_staple_policy: MUST_STAPLE\n",
        server_cert(),
        q(ca.cert_pem())
    );
    let errs = errors(&bootstrap(&listener, "        allow_renegotiation: true"));
    let v = format!("{CTX}.common_tls_context.validation_context");
    for want in [
        format!("{v}.trust_chain_verification: ACCEPT_UNTRUSTED is not supported"),
        format!("{v}.verify_certificate_spki: SPKI pinning is not supported"),
        format!("{v}.crl: a certificate revocation list is not supported"),
        format!("{CTX}.ocsp_staple_policy: OCSP stapling is not supported"),
        "static_resources.clusters[0].transport_socket.typed_config.allow_renegotiation: TLS renegotiation is not supported".to_string(),
    ] {
        assert!(has(&errs, &want), "missing {want:?} in {errs:?}");
    }
}

#[test]
fn client_certificates_cannot_be_required_without_a_ca() {
    let listener = format!(
        "{}          require_client_certificate: true\n",
        server_cert()
    );
    let errs = errors(&bootstrap(&listener, ""));
    assert!(has(&errs, &format!("{CTX}.require_client_certificate: require_client_certificate needs a validation context")), "{errs:?}");
}

#[test]
fn san_matchers_without_a_trusted_ca_are_refused() {
    let listener = format!(
        "{}            validation_context:\n              match_typed_subject_alt_names: [ {{ san_type: URI, matcher: {{ exact: \"spiffe://td/x\" }} }} ]\n",
        server_cert()
    );
    let errs = errors(&bootstrap(&listener, ""));
    assert!(has(&errs, &format!("{CTX}.common_tls_context.validation_context: SAN-based verification of peer certificates without trusted CA is insecure")), "{errs:?}");
}

#[test]
fn static_secrets_must_exist_and_grpc_sds_waits_for_its_push() {
    let listener = "          common_tls_context:\n            tls_certificate_sds_secret_configs:\n            - name: missing\n            validation_context_sds_secret_config:\n              name: v\n              sds_config: { ads: {} }\n";
    let errs = errors(&bootstrap(listener, ""));
    let c = format!("{CTX}.common_tls_context");
    assert!(
        has(
            &errs,
            &format!(
                "{c}.tls_certificate_sds_secret_configs[0].name: Unknown static secret: missing"
            )
        ),
        "{errs:?}"
    );
    assert!(
        !errs
            .iter()
            .any(|e| e.contains("validation_context_sds_secret_config")),
        "{errs:?}"
    );
}

#[test]
fn static_secrets_are_found_by_name_and_bad_ones_reported() {
    let ca = ca("td");
    let c = issue(&ca, "spiffe://td/server");
    let yaml = bootstrap(
        "          common_tls_context:\n            tls_certificate_sds_secret_configs: [ { name: server } ]\n            validation_context_sds_secret_config: { name: roots }\n          require_client_certificate: true\n",
        "",
    )
    .replace(
        "static_resources:\n",
        &format!(
            "static_resources:\n  secrets:\n  - name: server\n    tls_certificate:\n      certificate_chain: {{ inline_string: {} }}\n      private_key: {{ inline_string: {} }}\n  - name: roots\n    validation_context:\n      trusted_ca: {{ inline_string: {} }}\n  - name: broken\n    tls_certificate:\n      certificate_chain: {{ inline_string: {} }}\n      private_key: {{ inline_string: {} }}\n",
            q(&c.chain_pem),
            q(&c.key_pem),
            q(ca.cert_pem()),
            q(&c.chain_pem),
            q(&issue(&ca, "spiffe://td/other").key_pem),
        ),
    );
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("static_resources.secrets[2].tls_certificate: "),
        "{errs:?}"
    );
    assert!(errs[0].contains("does not match"), "{errs:?}");
}

#[test]
fn tls_versions_outside_what_rustls_speaks_are_errors() {
    let listener = format!(
        "{}            tls_params: {{ tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_2 }}\n",
        server_cert()
    );
    let errs = errors(&bootstrap(
        &listener,
        "        common_tls_context: { tls_params: { tls_maximum_protocol_version: TLSv1_1 } }",
    ));
    assert!(has(&errs, &format!("{CTX}.common_tls_context.tls_params.tls_minimum_protocol_version: the minimum protocol version is above the maximum")), "{errs:?}");
    assert!(has(&errs, "static_resources.clusters[0].transport_socket.typed_config.common_tls_context.tls_params.tls_maximum_protocol_version: TLS versions below TLSv1_2"), "{errs:?}");
}
