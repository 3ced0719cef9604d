//! `envoy.filters.http.grpc_stats` on Envoy and remora with the same bootstrap: gRPC calls to an
//! h2c backend that answers with `grpc-status` in trailers or trailers-only, counted under
//! `cluster.<name>.grpc.` per method, for all calls, or for an allowlist; requests that are not
//! gRPC calls (another content type, a path that is not `/<service>/<method>`) are not counted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use remora_tests::backend::grpc::message;
use remora_tests::client::{Client, Protocol, Request};
use remora_tests::peers::stats_with_prefix;
use remora_tests::select::for_each_kind;
use remora_tests::stack::Stack;

const SAY_HELLO: &str = "/helloworld.Greeter/SayHello";
const SAY_GOODBYE: &str = "/helloworld.Greeter/SayGoodbye";

fn call(path: &str, messages: usize) -> Request {
    let body: Vec<u8> = (0..messages)
        .flat_map(|i| message(&[b'm'; 3][..i % 3 + 1]))
        .collect();
    Request::new("POST", path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
}

/// The calls every listener gets: two SayHello (one OK with two messages, one UNAVAILABLE), one
/// SayGoodbye answered trailers-only with NOT_FOUND, and two requests that are not gRPC calls.
async fn calls(client: &mut Client) {
    let reqs = [
        call(SAY_HELLO, 2),
        call(SAY_HELLO, 1).header("x-grpc-status", "14"),
        call(SAY_GOODBYE, 1)
            .header("x-grpc-status", "5")
            .header("x-grpc-trailers-only", "1"),
        call("/not-a-method", 1),
        Request::new("POST", SAY_HELLO)
            .header("content-type", "application/json")
            .body("{}"),
    ];
    for req in &reqs {
        let r = client.send(req).await.expect("response");
        assert_eq!(r.status, 200, "{} {}", req.path, r.text());
    }
}

fn expected(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect()
}

/// Waits for the cluster's `grpc.` counters to equal `want` (the last ones land as the response
/// bodies end).
async fn assert_grpc_stats(admin: u16, cluster: &str, want: BTreeMap<String, u64>, what: &str) {
    let prefix = format!("cluster.{cluster}.grpc.");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got: BTreeMap<String, u64> = stats_with_prefix(admin, &prefix)
            .await
            .into_iter()
            .filter(|(_, v)| *v > 0)
            .map(|(n, v)| (n[prefix.len()..].to_string(), v))
            .collect();
        if got == want || Instant::now() > deadline {
            assert_eq!(got, want, "{what}: {cluster}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every call under one set of stats (`cluster.<name>.grpc.*`).
fn unnamed() -> BTreeMap<String, u64> {
    expected(&[
        ("0", 1),
        ("14", 1),
        ("5", 1),
        ("success", 1),
        ("failure", 2),
        ("total", 3),
        ("request_message_count", 4),
        ("response_message_count", 3),
    ])
}

const HELLO: [(&str, u64); 7] = [
    ("helloworld.Greeter.SayHello.0", 1),
    ("helloworld.Greeter.SayHello.14", 1),
    ("helloworld.Greeter.SayHello.success", 1),
    ("helloworld.Greeter.SayHello.failure", 1),
    ("helloworld.Greeter.SayHello.total", 2),
    ("helloworld.Greeter.SayHello.request_message_count", 3),
    ("helloworld.Greeter.SayHello.response_message_count", 3),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_are_counted_per_cluster_as_envoy_names_them() {
    for_each_kind(|kind| async move {
        let s = Stack::start(kind, "filters/grpc_stats.yaml").await;
        for port in [
            "listener_port",
            "listener_port_istio",
            "listener_port_listed",
            "listener_port_bare",
        ] {
            let mut client = Client::new(s.env.addr(port), Protocol::H2c);
            calls(&mut client).await;
        }
        let admin = s.admin();
        let what = format!("[{kind}]");

        let mut all = expected(&HELLO);
        all.extend(expected(&[
            ("helloworld.Greeter.SayGoodbye.5", 1),
            ("helloworld.Greeter.SayGoodbye.failure", 1),
            ("helloworld.Greeter.SayGoodbye.total", 1),
            ("helloworld.Greeter.SayGoodbye.request_message_count", 1),
        ]));
        assert_grpc_stats(admin, "grpc_all", all, &what).await;

        assert_grpc_stats(admin, "grpc_istio", unnamed(), &what).await;
        assert_grpc_stats(admin, "grpc_bare", unnamed(), &what).await;

        let mut listed = expected(&HELLO);
        listed.extend(expected(&[
            ("5", 1),
            ("failure", 1),
            ("total", 1),
            ("request_message_count", 1),
        ]));
        assert_grpc_stats(admin, "grpc_listed", listed, &what).await;
    })
    .await;
}
