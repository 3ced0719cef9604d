use super::*;
use crate::config::istio::{ExchangeConfig, StatsConfig};
use crate::istio::metrics::IstioMetrics;
use crate::tls::{PeerCert, TlsInfo};

fn local() -> Arc<LocalNode> {
    let mut node = LocalNode::default();
    node.metadata = WorkloadMetadata {
        workload: "reviews-v1".into(),
        namespace: "bookinfo".into(),
        canonical_name: "reviews".into(),
        canonical_revision: "v1".into(),
        app: "reviews".into(),
        version: "v1".into(),
        cluster: "Kubernetes".into(),
        ..Default::default()
    };
    node.header = http::HeaderValue::from_str(&node.metadata.header_value()).ok();
    node.id = Some(http::HeaderValue::from_static("sidecar~10.0.0.2~reviews"));
    node.metrics = IstioMetrics::default();
    Arc::new(node)
}

fn peer() -> WorkloadMetadata {
    WorkloadMetadata {
        workload: "productpage-v1".into(),
        namespace: "bookinfo".into(),
        canonical_name: "productpage".into(),
        app: "productpage".into(),
        version: "v1".into(),
        ..Default::default()
    }
}

fn inbound(local: Arc<LocalNode>) -> HttpTelemetry {
    HttpTelemetry {
        local,
        cfg: HttpIstio {
            stats: Some(StatsConfig {
                reporter: Reporter::ServerSidecar,
                host_header_fallback: true,
            }),
            exchange: Some(ExchangeConfig {
                downstream_discovery: vec![Discovery::IstioHeaders],
                downstream_propagation: true,
                ..Default::default()
            }),
            alpn: None,
        },
    }
}

fn mtls() -> TlsInfo {
    TlsInfo {
        version: "TLSv1.3",
        cipher: "TLS_AES_128_GCM_SHA256",
        sni: None,
        alpn: None,
        peer: Some(PeerCert {
            uri_sans: vec!["spiffe://cluster.local/ns/bookinfo/sa/productpage".into()],
            dns_sans: vec![],
            subject: String::new(),
            serial: String::new(),
            spiffe_id: None,
            sha256: String::new(),
            der: Default::default(),
            signature_scheme: None,
        }),
        local_uri_sans: vec!["spiffe://cluster.local/ns/bookinfo/sa/reviews".into()],
    }
}

#[test]
fn inbound_takes_the_peer_off_the_request_and_answers_with_its_own() {
    let local = local();
    let t = inbound(local.clone());
    let mut req = HeaderMap::new();
    req.insert(
        PEER_METADATA,
        http::HeaderValue::from_str(&peer().header_value()).expect("value"),
    );
    req.insert(
        PEER_METADATA_ID,
        http::HeaderValue::from_static("sidecar~x"),
    );
    req.insert(HOST, http::HeaderValue::from_static("reviews:9080"));
    let side = t.request(&mut req);
    assert!(req.get(PEER_METADATA).is_none() && req.get(PEER_METADATA_ID).is_none());
    assert_eq!(
        side.downstream_peer.as_ref().map(|p| p.workload.as_str()),
        Some("productpage-v1")
    );
    assert_eq!(side.host.as_deref(), Some("reviews:9080"));

    let mut resp = HeaderMap::new();
    let rside = t.response(&mut resp);
    let ours = resp.get(PEER_METADATA).expect("propagated downstream");
    assert_eq!(
        WorkloadMetadata::from_header(ours.as_bytes()).map(|m| m.workload),
        Some("reviews-v1".to_string())
    );

    let tls = mtls();
    let done = Finished {
        status: 200,
        cluster: Some("inbound|9080||"),
        downstream_tls: Some(&tls),
        duration: Duration::from_millis(3),
        ..Default::default()
    };
    t.record(&side, &rside, &done);
    t.record(&side, &rside, &done);
    let mut out = String::new();
    local.metrics.render(&mut out);
    let line = out
        .lines()
        .find(|l| l.starts_with("istio_requests_total{"))
        .expect("a series");
    for want in [
        "reporter=\"destination\"",
        "source_workload=\"productpage-v1\"",
        "source_principal=\"spiffe://cluster.local/ns/bookinfo/sa/productpage\"",
        "destination_workload=\"reviews-v1\"",
        "destination_principal=\"spiffe://cluster.local/ns/bookinfo/sa/reviews\"",
        "destination_service=\"reviews:9080\"",
        "request_protocol=\"http\"",
        "response_code=\"200\"",
        "response_flags=\"-\"",
        "connection_security_policy=\"mutual_tls\"",
    ] {
        assert!(line.contains(want), "{want} in {line}");
    }
    assert!(line.ends_with("} 2"), "{line}");
}

#[test]
fn outbound_labels_the_upstream_peer_from_the_response() {
    let local = local();
    let t = HttpTelemetry {
        local: local.clone(),
        cfg: HttpIstio {
            stats: Some(StatsConfig {
                reporter: Reporter::ClientSidecar,
                host_header_fallback: false,
            }),
            exchange: Some(ExchangeConfig {
                upstream_discovery: vec![Discovery::IstioHeaders],
                upstream_propagation: true,
                ..Default::default()
            }),
            alpn: None,
        },
    };
    let mut req = HeaderMap::new();
    req.insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    let side = t.request(&mut req);
    assert!(
        req.get(PEER_METADATA).is_some(),
        "introduced to the upstream"
    );
    assert!(side.grpc);
    assert_eq!(side.host, None, "host fallback disabled");
    let mut resp = HeaderMap::new();
    resp.insert(
        PEER_METADATA,
        http::HeaderValue::from_str(&peer().header_value()).expect("value"),
    );
    let rside = t.response(&mut resp);
    assert!(resp.get(PEER_METADATA).is_none(), "stripped before the app");
    let done = Finished {
        status: 200,
        grpc_status: Some(14),
        flags: "",
        cluster: Some("outbound|9080||productpage.bookinfo.svc.cluster.local"),
        ..Default::default()
    };
    let v = t.labels(Reporter::ClientSidecar, &side, &rside, &done);
    let get = |n: &str| {
        let i = labels::HTTP_LABELS
            .iter()
            .position(|x| *x == n)
            .expect("name");
        v[i].to_string()
    };
    assert_eq!(get("reporter"), "source");
    assert_eq!(get("source_workload"), "reviews-v1");
    assert_eq!(get("destination_workload"), "productpage-v1");
    assert_eq!(
        get("destination_service"),
        "productpage.bookinfo.svc.cluster.local"
    );
    assert_eq!(get("request_protocol"), "grpc");
    assert_eq!(get("grpc_response_status"), "14");
    assert_eq!(get("connection_security_policy"), "unknown");
}

#[test]
fn without_the_exchange_the_headers_pass_and_the_peer_is_unknown() {
    let local = local();
    let mut t = inbound(local);
    t.cfg.exchange = None;
    let mut req = HeaderMap::new();
    req.insert(
        PEER_METADATA,
        http::HeaderValue::from_str(&peer().header_value()).expect("value"),
    );
    let side = t.request(&mut req);
    assert!(req.get(PEER_METADATA).is_some());
    assert!(side.downstream_peer.is_none());
    let v = t.labels(
        Reporter::ServerSidecar,
        &side,
        &ResponseSide::default(),
        &Finished::default(),
    );
    assert_eq!(&*v[1], "unknown", "source_workload");
    assert_eq!(&*v[v.len() - 1], "none", "plain text downstream");
}
