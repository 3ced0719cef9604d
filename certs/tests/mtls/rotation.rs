//! Certificate rotation: new handshakes see the new certificate, open connections keep working.

use remora_certs::SanMatcher;

use crate::mtls::support::*;

#[test]
fn rotating_the_server_certificate_affects_only_new_handshakes() {
    let ca = ca("cluster.local");
    let server_id = "spiffe://cluster.local/ns/default/sa/server";
    let client_id = "spiffe://cluster.local/ns/default/sa/client";
    let server_certs = resolver(leaf(&ca, server_id));
    let client_certs = resolver(leaf(&ca, client_id));
    let srv = server(
        bundle_of(&ca),
        vec![SanMatcher::SpiffeId(id(client_id))],
        true,
        server_certs.clone(),
        TLS13,
    );
    let cli = client(
        bundle_of(&ca),
        vec![SanMatcher::SpiffeId(id(server_id))],
        Some(client_certs.clone()),
        TLS13,
    );

    let mut before = handshake(cli.clone(), srv.clone());
    assert!(before.ok());
    let old_server_serial = before.server_cert_info().serial().to_string();
    let old_client_serial = before
        .client_cert_info()
        .expect("client cert")
        .serial()
        .to_string();
    assert_eq!(
        server_certs.current_info().expect("info").serial(),
        old_server_serial
    );

    server_certs.store(leaf(&ca, server_id));
    client_certs.store(leaf(&ca, client_id));
    let new_server_serial = server_certs
        .current_info()
        .expect("info")
        .serial()
        .to_string();
    assert_ne!(new_server_serial, old_server_serial);

    // The connection made before the rotation still carries traffic, and still reports the
    // certificates it was established with.
    before.exchange(b"still there?", b"yes");
    assert_eq!(before.server_cert_info().serial(), old_server_serial);

    // A client holding a session ticket resumes without a certificate exchange: the resumed
    // connection keeps the identity of the original handshake.
    let resumed = handshake(cli.clone(), srv.clone());
    assert!(resumed.ok());
    assert_eq!(
        resumed.client.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    assert_eq!(resumed.server_cert_info().serial(), old_server_serial);

    // A full handshake presents the new certificates on both sides.
    let mut fresh = (*cli).clone();
    fresh.resumption = rustls::client::Resumption::disabled();
    let mut after = handshake(std::sync::Arc::new(fresh), srv);
    assert!(after.ok());
    assert_eq!(
        after.client.handshake_kind(),
        Some(rustls::HandshakeKind::Full)
    );
    assert_eq!(after.server_cert_info().serial(), new_server_serial);
    let new_client_serial = after
        .client_cert_info()
        .expect("client cert")
        .serial()
        .to_string();
    assert_ne!(
        new_client_serial, old_client_serial,
        "the client side rotates too"
    );
    after.exchange(b"new", b"cert");
    before.exchange(b"old", b"cert");
}
