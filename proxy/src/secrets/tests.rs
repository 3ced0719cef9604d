//! SDS from files: loading, rotation by rename, bad updates keeping the old secret, and a TLS
//! context waiting for its secret.

use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    DownstreamTlsContext, SdsSecretConfig,
};
use remora_certs::{IssueOptions, IssuedCert};

use super::{SecretStore, SecretValue};
use crate::config::parse::{from_yaml, ParseOptions};
use crate::config::Path;
use crate::stats::Store;
use crate::tls::tests::{ca, issue_with, temp_dir};
use crate::tls::{AcceptError, ServerTls};

/// Writes `contents` next to `path` and renames it into place, as Istio and `mv -f` do.
fn replace(path: &FsPath, contents: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn write_cert(dir: &FsPath, c: &IssuedCert) {
    replace(&dir.join("key.pem"), c.key_pem.as_bytes());
    replace(&dir.join("cert.pem"), c.chain_pem.as_bytes());
}

fn sds_yaml(dir: &FsPath) -> String {
    format!(
        "resources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  name: server\n  tls_certificate:\n    certificate_chain: {{ filename: {} }}\n    private_key: {{ filename: {} }}\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    )
}

fn sds_config(file: &FsPath) -> SdsSecretConfig {
    from_yaml(
        &format!(
            "name: server\nsds_config: {{ path_config_source: {{ path: {} }} }}",
            file.display()
        ),
        ParseOptions::default(),
    )
    .expect("sds config")
}

fn ten_days() -> IssueOptions {
    IssueOptions {
        validity: Duration::from_secs(10 * 86_400),
        ..IssueOptions::default()
    }
}

fn serial(store_value: Option<std::sync::Arc<SecretValue>>) -> String {
    match store_value.as_deref() {
        Some(SecretValue::TlsCertificate(c)) => c.leaf.serial().to_string(),
        other => panic!("not a certificate: {other:?}"),
    }
}

fn setup() -> (PathBuf, PathBuf, remora_certs::DevCa) {
    let dir = temp_dir("sds");
    let file = dir.join("sds.yaml");
    std::fs::write(&file, sds_yaml(&dir)).expect("sds file");
    (dir, file, ca("td"))
}

#[test]
fn renamed_files_rotate_and_bad_updates_keep_the_old_secret() {
    let (dir, file, ca) = setup();
    let first = issue_with(&ca, "spiffe://td/server", &ten_days());
    write_cert(&dir, &first);
    let stats = Store::new();
    let store = SecretStore::new(&stats);
    let entry = store
        .resolve(&sds_config(&file), &Path::root("cfg"))
        .expect("resolve");
    let first_serial = first.leaf_info().expect("leaf").serial().to_string();
    assert_eq!(serial(entry.current()), first_serial);
    let days = stats.gauge("server.days_until_first_cert_expiring").get();
    assert!((9..=10).contains(&days), "{days}");

    // Unchanged files are not read again.
    store.poll_files();
    assert_eq!(stats.counter("sds.server.update_success").get(), 1);
    assert_eq!(stats.counter("sds.server.update_attempt").get(), 1);

    let three_days = IssueOptions {
        validity: Duration::from_secs(3 * 86_400),
        ..IssueOptions::default()
    };
    let second = issue_with(&ca, "spiffe://td/server", &three_days);
    write_cert(&dir, &second);
    store.poll_files();
    let second_serial = second.leaf_info().expect("leaf").serial().to_string();
    assert_eq!(serial(entry.current()), second_serial);
    assert_eq!(stats.counter("sds.server.update_success").get(), 2);
    let days = stats.gauge("server.days_until_first_cert_expiring").get();
    assert!((2..=3).contains(&days), "{days}");

    // A chain that does not parse: the certificate in use stays.
    replace(
        &dir.join("cert.pem"),
        b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n",
    );
    store.poll_files();
    assert_eq!(serial(entry.current()), second_serial);
    assert_eq!(stats.counter("sds.server.key_rotation_failed").get(), 1);

    // An SDS file that does not parse: same, counted as Envoy's filesystem subscription does.
    replace(&file, b"resources: [ { \"@type\": nonsense } ]");
    store.poll_files();
    assert_eq!(serial(entry.current()), second_serial);
    assert_eq!(stats.counter("sds.server.update_failure").get(), 1);
    assert_eq!(stats.counter("sds.server.update_rejected").get(), 0);
    // Only the certificate files changed before: one attempt for the first load, one now.
    assert_eq!(stats.counter("sds.server.update_attempt").get(), 2);

    // One that parses but names another secret: rejected.
    replace(
        &file,
        sds_yaml(&dir)
            .replace("name: server", "name: other")
            .as_bytes(),
    );
    store.poll_files();
    assert_eq!(serial(entry.current()), second_serial);
    assert_eq!(stats.counter("sds.server.update_rejected").get(), 1);

    // Both good again: the third certificate loads.
    let third = issue_with(&ca, "spiffe://td/server", &ten_days());
    write_cert(&dir, &third);
    replace(&file, sds_yaml(&dir).as_bytes());
    store.poll_files();
    let third_serial = third.leaf_info().expect("leaf").serial().to_string();
    assert_eq!(serial(entry.current()), third_serial);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_context_refuses_connections_until_its_secret_arrives() {
    let (dir, file, ca) = setup();
    let stats = Store::new();
    let store = SecretStore::new(&stats);
    let ctx: DownstreamTlsContext = from_yaml(
        &format!(
            "common_tls_context:\n  tls_certificate_sds_secret_configs:\n  - name: server\n    sds_config: {{ path_config_source: {{ path: {} }} }}\n",
            file.display()
        ),
        ParseOptions::default(),
    )
    .expect("ctx");
    let tls = ServerTls::from_proto(&ctx, &Path::root("ctx"), &store, None).expect("context");
    tls.bind_stats(&stats, "listener.sds");
    assert!(!tls.is_ready());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (stream, peer) = listener.accept().await.expect("accept");
    let res = tls.accept(stream, peer).await;
    assert!(matches!(res, Err(AcceptError::NotReady(_))), "{res:?}");
    assert_eq!(
        stats
            .counter("listener.sds.server_ssl_socket_factory.downstream_context_secrets_not_ready")
            .get(),
        1
    );

    let cert = issue_with(&ca, "spiffe://td/server", &IssueOptions::default());
    write_cert(&dir, &cert);
    store.poll_files();
    assert!(tls.is_ready());
    assert_eq!(
        tls.current_certificate().expect("cert").serial(),
        cert.leaf_info().expect("leaf").serial()
    );
    assert_eq!(
        stats
            .counter("listener.sds.server_ssl_socket_factory.ssl_context_update_by_sds")
            .get(),
        1
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn secrets_pushed_over_sds_reach_the_contexts_that_name_them() {
    use crate::xds::{Decoded, Named};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
    let (dir, _, ca) = setup();
    let stats = Store::new();
    let store = SecretStore::new(&stats);
    let cfg: SdsSecretConfig = from_yaml(
        "name: server\nsds_config: { ads: {}, resource_api_version: V3 }",
        ParseOptions::default(),
    )
    .expect("sds config");
    let entry = store.resolve(&cfg, &Path::root("cfg")).expect("resolve");
    assert!(entry.current().is_none(), "nothing until the push");
    assert_eq!(store.pushed_names(), ["server"]);

    let push = |cert: &IssuedCert| -> Decoded<Secret> {
        let secret: Secret = from_yaml(
            &format!(
                "name: server\ntls_certificate:\n  certificate_chain: {{ inline_string: {:?} }}\n  private_key: {{ inline_string: {:?} }}\n",
                cert.chain_pem, cert.key_pem
            ),
            ParseOptions::default(),
        )
        .expect("secret");
        Decoded {
            version: "1".into(),
            resources: vec![Named {
                name: "server".into(),
                version: "1".into(),
                resource: secret,
            }],
            removed: Vec::new(),
            full_state: false,
        }
    };
    let first = issue_with(&ca, "spiffe://td/server", &ten_days());
    store.apply_secrets(&push(&first)).expect("accepted");
    assert_eq!(
        serial(entry.current()),
        first.leaf_info().expect("leaf").serial().to_string()
    );

    // A secret that does not load is rejected by name; the one in use stays.
    let mut bad = push(&first);
    if let Some(r) = bad.resources.first_mut() {
        r.resource = from_yaml(
            "name: server\ntls_certificate:\n  certificate_chain: { inline_string: nope }\n  private_key: { inline_string: nope }\n",
            ParseOptions::default(),
        )
        .expect("secret");
    }
    let errors = store.apply_secrets(&bad).expect_err("rejected");
    assert_eq!(errors[0].name, "server");
    assert_eq!(
        serial(entry.current()),
        first.leaf_info().expect("leaf").serial().to_string()
    );
    let _ = std::fs::remove_dir_all(dir);
}
