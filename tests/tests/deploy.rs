//! The Kubernetes manifests under `deploy/` and the Dockerfiles: structurally sound, consistent with
//! each other, and the gateway's bootstrap actually runs — its HTTPS listener serves the certificate
//! the SDS file names and its Prometheus listener serves `/stats/prometheus`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use remora_tests::pki::Pki;
use remora_tests::tempdir::TempDir;
use remora_tests::{exec, ports, Kind, Proxy};
use serde::Deserialize;
use serde_yaml_ng::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Every YAML document of every `.yaml` file under `deploy/<dir>`, with its file name.
fn documents(dir: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(repo().join("deploy").join(dir))
        .expect("deploy dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read manifest");
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            out.push((name.clone(), v));
        }
    }
    out
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path).and_then(Value::as_str)
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn kind<'a>(docs: &'a [(String, Value)], kind: &str) -> &'a Value {
    &docs
        .iter()
        .find(|(_, d)| str_at(d, &["kind"]) == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} in deploy/gateway"))
        .1
}

fn labels(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn gateway_manifests_are_consistent() {
    let docs = documents("gateway");
    for (file, d) in &docs {
        if str_at(d, &["kind"]) == Some("Kustomization") {
            continue;
        }
        for field in [&["apiVersion"][..], &["kind"], &["metadata", "name"]] {
            assert!(str_at(d, field).is_some(), "{file}: missing {field:?}");
        }
    }
    // kustomization lists exactly the other files.
    let kust = kind(&docs, "Kustomization");
    let listed: Vec<&str> = at(kust, &["resources"])
        .and_then(Value::as_sequence)
        .expect("resources")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut files: Vec<&str> = docs
        .iter()
        .map(|(f, _)| f.as_str())
        .filter(|f| *f != "kustomization.yaml")
        .collect();
    files.dedup();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, files, "kustomization resources vs files");

    let dep = kind(&docs, "Deployment");
    let pod_labels = labels(at(dep, &["spec", "template", "metadata", "labels"]));
    assert_eq!(
        labels(at(dep, &["spec", "selector", "matchLabels"])),
        pod_labels,
        "Deployment selector must match its pod labels"
    );
    assert_eq!(
        at(
            dep,
            &["spec", "template", "spec", "securityContext", "runAsUser"]
        )
        .and_then(Value::as_u64),
        Some(1337),
        "the proxy runs as uid 1337"
    );
    let container = at(dep, &["spec", "template", "spec", "containers"])
        .and_then(|c| c.get(0))
        .expect("container");
    let port_names: Vec<&str> = at(container, &["ports"])
        .and_then(Value::as_sequence)
        .expect("ports")
        .iter()
        .filter_map(|p| str_at(p, &["name"]))
        .collect();
    // Every mount has a volume, every ConfigMap volume names the ConfigMap and keys it holds.
    let cm = kind(&docs, "ConfigMap");
    let cm_name = str_at(cm, &["metadata", "name"]).expect("cm name");
    let volumes = at(dep, &["spec", "template", "spec", "volumes"])
        .and_then(Value::as_sequence)
        .expect("volumes");
    for m in at(container, &["volumeMounts"])
        .and_then(Value::as_sequence)
        .expect("mounts")
    {
        let name = str_at(m, &["name"]).expect("mount name");
        let vol = volumes
            .iter()
            .find(|v| str_at(v, &["name"]) == Some(name))
            .unwrap_or_else(|| panic!("mount {name} has no volume"));
        if let Some(c) = at(vol, &["configMap"]) {
            assert_eq!(str_at(c, &["name"]), Some(cm_name), "volume {name}");
            for item in at(c, &["items"])
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                let key = str_at(item, &["key"]).expect("key");
                assert!(at(cm, &["data", key]).is_some(), "ConfigMap lacks {key}");
            }
        }
        if let Some(sub) = str_at(m, &["subPath"]) {
            assert!(at(cm, &["data", sub]).is_some(), "ConfigMap lacks {sub}");
        }
    }
    // The probes run remora's own probe against the admin address the bootstrap binds.
    let bootstrap: Value =
        serde_yaml_ng::from_str(str_at(cm, &["data", "envoy.yaml"]).expect("bootstrap"))
            .expect("yaml");
    let admin_port = at(
        &bootstrap,
        &["admin", "address", "socket_address", "port_value"],
    )
    .and_then(Value::as_u64)
    .expect("admin port");
    for probe in ["readinessProbe", "livenessProbe"] {
        let cmd: Vec<&str> = at(container, &[probe, "exec", "command"])
            .and_then(Value::as_sequence)
            .unwrap_or_else(|| panic!("{probe} exec"))
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(&cmd[..2], &["remora", "probe"], "{probe}");
        assert!(
            cmd[2].starts_with(&format!("http://127.0.0.1:{admin_port}/")),
            "{probe} must reach the admin port {admin_port}: {}",
            cmd[2]
        );
    }
    // The Service and the PodMonitor select the pods and name ports the container has.
    let svc = kind(&docs, "Service");
    for (k, v) in labels(at(svc, &["spec", "selector"])) {
        assert_eq!(pod_labels.get(&k), Some(&v), "Service selector {k}");
    }
    for p in at(svc, &["spec", "ports"])
        .and_then(Value::as_sequence)
        .expect("svc ports")
    {
        let target = str_at(p, &["targetPort"]).expect("named targetPort");
        assert!(port_names.contains(&target), "Service targetPort {target}");
    }
    let pm = kind(&docs, "PodMonitor");
    for (k, v) in labels(at(pm, &["spec", "selector", "matchLabels"])) {
        assert_eq!(pod_labels.get(&k), Some(&v), "PodMonitor selector {k}");
    }
    let ep = at(pm, &["spec", "podMetricsEndpoints"])
        .and_then(|e| e.get(0))
        .expect("endpoint");
    assert!(port_names.contains(&str_at(ep, &["port"]).expect("port")));
    assert_eq!(str_at(ep, &["path"]), Some("/stats/prometheus"));
}

#[test]
fn sidecar_template_and_dockerfiles_name_remora() {
    let docs = documents("sidecar");
    let op = &docs
        .iter()
        .find(|(_, d)| str_at(d, &["kind"]) == Some("IstioOperator"))
        .expect("IstioOperator")
        .1;
    let template = str_at(
        op,
        &[
            "spec",
            "values",
            "sidecarInjectorWebhook",
            "templates",
            "remora",
        ],
    )
    .expect("templates.remora");
    let t: Value = serde_yaml_ng::from_str(template).expect("template yaml");
    let c = at(&t, &["spec", "containers"])
        .and_then(|c| c.get(0))
        .expect("container");
    assert_eq!(
        str_at(c, &["name"]),
        Some("istio-proxy"),
        "the template patches Istio's sidecar"
    );
    assert!(str_at(c, &["image"]).is_some_and(|i| i.contains("remora")));

    let proxyv2 = std::fs::read_to_string(repo().join("deploy/sidecar/Dockerfile.proxyv2"))
        .expect("Dockerfile.proxyv2");
    assert!(
        proxyv2.contains("/usr/local/bin/envoy"),
        "remora replaces Envoy's binary"
    );
    let root = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    for needle in [
        "USER 1337",
        "HEALTHCHECK",
        "remora\", \"probe\"",
        "ENTRYPOINT [\"remora\"]",
    ] {
        assert!(root.contains(needle), "Dockerfile lacks {needle}");
    }
}

/// The gateway bootstrap, with its ports and file paths moved into a scratch directory, runs: HTTPS
/// presents the mounted certificate, `:15090/stats/prometheus` answers, the admin `/ready` is 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_bootstrap_runs() {
    let docs = documents("gateway");
    let cm = kind(&docs, "ConfigMap");
    let dir = TempDir::new("deploy-gateway");
    let mut pki = Pki::new();
    let id = pki.issue(
        "gateway",
        "spiffe://cluster.local/ns/remora-gateway/sa/gateway",
        &["gateway.example.com"],
    );
    let tls_dir = dir.join("tls");
    std::fs::create_dir_all(&tls_dir).expect("tls dir");
    std::fs::copy(id.cert(), tls_dir.join("tls.crt")).expect("cert");
    std::fs::copy(id.key(), tls_dir.join("tls.key")).expect("key");
    let sds_dir = dir.join("sds");
    std::fs::create_dir_all(&sds_dir).expect("sds dir");
    let relocate = |s: &str| {
        s.replace("/etc/remora/tls", &tls_dir.to_string_lossy())
            .replace("/etc/remora/sds", &sds_dir.to_string_lossy())
    };
    std::fs::write(
        sds_dir.join("gateway-cert.yaml"),
        relocate(str_at(cm, &["data", "gateway-cert.yaml"]).expect("sds file")),
    )
    .expect("write sds");
    let (http, https, prom, admin) = (
        ports::free_port(),
        ports::free_port(),
        ports::free_port(),
        ports::free_port(),
    );
    let bootstrap = relocate(str_at(cm, &["data", "envoy.yaml"]).expect("bootstrap"))
        .replace("port_value: 8080", &format!("port_value: {http}"))
        .replace("port_value: 8443", &format!("port_value: {https}"))
        .replace("port_value: 15090", &format!("port_value: {prom}"))
        .replace("port_value: 15000", &format!("port_value: {admin}"))
        .replace("address: 0.0.0.0", "address: 127.0.0.1")
        // No cluster DNS here: point the backend at a closed loopback port.
        .replace(
            "address: web.default.svc.cluster.local, port_value: 80",
            &format!("address: 127.0.0.1, port_value: {}", ports::dead_port()),
        );
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, &bootstrap).expect("write bootstrap");
    let remora = Kind::Remora.binary().expect("remora binary");
    let v = exec::run(
        &remora,
        &["--mode", "validate", "-c", &path.to_string_lossy()],
        Duration::from_secs(20),
    );
    assert_eq!(v.code, Some(0), "validate: {}", v.all());

    let _proxy = Proxy::start(Kind::Remora, &bootstrap).await;
    let metrics =
        remora_tests::curl::get(&format!("http://127.0.0.1:{prom}/stats/prometheus"), &[])
            .expect("curl metrics");
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    assert!(
        metrics.body.contains("envoy_server_live"),
        "{}",
        metrics.body
    );
    let tls = remora_tests::curl::get(
        &format!("https://gateway.example.com:{https}/"),
        &[
            "--cacert",
            &pki.ca_pem().to_string_lossy(),
            "--resolve",
            &format!("gateway.example.com:{https}:127.0.0.1"),
        ],
    )
    .expect("curl https");
    // The backend is down: the TLS handshake with the mounted certificate succeeded and remora
    // answered with its upstream failure.
    assert_eq!(tls.status, 503, "{}", tls.body);
    let probe = exec::run(
        &remora,
        &["probe", &format!("http://127.0.0.1:{admin}/ready")],
        Duration::from_secs(10),
    );
    assert_eq!(probe.code, Some(0), "probe: {}", probe.all());
}
