//! Wiring: the snapshot's listeners, clusters and admin become running tasks; signals become a drain.

pub mod dynamic;
mod hooks;
pub mod listeners;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hooks::AppHooks;

use anyhow::Context;

use crate::access_log::Writers;
use crate::admin::{self, AdminState, ServerInfo, ServerState, ServerStateCell};
use crate::cli::ServerArgs;
use crate::config::network::{ChainStack, NetworkStack};
use crate::config::parse::to_json;
use crate::config::{self, ParseOptions, Snapshot};
use crate::detect::{Detector, TlsStart};
use crate::drain;
use crate::http::server::ConnInfo;
use crate::listener::{Accepted, InternalAccepted};
use crate::logging::LogControl;
use crate::stats::Store;
use crate::xds::file::FileSource;
use crate::xds::stats::UpdateStats;
use crate::xds::{Kind, TypeSource};
use dynamic::DynamicConfig;
use listeners::ListenerManager;

/// What `/server_info` and `server.version` report.
pub const VERSION: &str = concat!("remora/", env!("CARGO_PKG_VERSION"));

/// The flags in the shape of Envoy's `CommandLineOptions` (the fields launchers read).
fn command_line_json(args: &ServerArgs) -> serde_json::Value {
    serde_json::json!({
        "config_path": args.config_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        "config_yaml": args.config_yaml.clone().unwrap_or_default(),
        "concurrency": workers(args),
        "log_level": args.log_level,
        "component_log_level": args.component_log_level.clone().unwrap_or_default(),
        "drain_time": format!("{}s", args.drain_time_s),
        "parent_shutdown_time": format!("{}s", args.parent_shutdown_time_s),
        "drain_strategy": format!("{:?}", args.drain_strategy),
        "service_node": args.service_node.clone().unwrap_or_default(),
        "service_cluster": args.service_cluster.clone().unwrap_or_default(),
        "mode": format!("{:?}", args.mode),
        "disable_hot_restart": args.disable_hot_restart,
        "file_flush_interval": format!("{}s", args.file_flush_interval_msec as f64 / 1000.0),
    })
}

pub fn parse_options(args: &ServerArgs) -> ParseOptions {
    ParseOptions {
        allow_unknown_fields: args.allow_unknown_static_fields,
    }
}

/// Loads and validates the bootstrap named by the flags.
pub fn load(
    args: &ServerArgs,
    stats: &Store,
    writers: &Writers,
) -> Result<Snapshot, config::ConfigErrors> {
    let opts = parse_options(args);
    let bootstrap = config::bootstrap::load(
        args.config_path.as_deref(),
        args.config_yaml.as_deref(),
        opts,
    )?;
    config::bootstrap::build(bootstrap, stats, opts, writers)
}

/// The worker count: `--concurrency`, or one per core as Envoy does.
pub fn workers(args: &ServerArgs) -> usize {
    args.concurrency.filter(|c| *c > 0).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

/// Runs the proxy until a signal or `/quitquitquit`, then drains.
pub async fn run(
    args: ServerArgs,
    snapshot: Snapshot,
    stats: Store,
    writers: Writers,
    log: LogControl,
) -> anyhow::Result<()> {
    let workers = workers(&args);
    let (drain_signal, drain_watch) = drain::channel();
    let Snapshot {
        bootstrap,
        admin: admin_addr,
        clusters,
        listeners,
        secrets,
        builder,
        dynamic,
    } = snapshot;
    secrets.start();
    clusters.start();
    let listener_manager = ListenerManager::new(
        builder.clone(),
        &stats,
        workers,
        Duration::from_secs(args.drain_time_s),
        drain_watch.clone(),
    );
    let config = Arc::new(DynamicConfig {
        clusters: clusters.clone(),
        routes: builder.routes.clone(),
        listeners: listener_manager.clone(),
        secrets: secrets.clone(),
        cluster_stats: builder.cluster_stats.clone(),
        warm_timeout: INITIAL_FETCH_TIMEOUT,
    });
    let (sources_stop, sources_stop_rx) = tokio::sync::watch::channel(false);
    let sink: Arc<dyn crate::xds::ConfigSink> = config.clone();
    let (cds_file, lds_file) = match &dynamic {
        Some(plan) => (
            file_source(&plan.cds, Kind::Cluster, &sink, &stats),
            file_source(&plan.lds, Kind::Listener, &sink, &stats),
        ),
        None => (None, None),
    };

    // gRPC sources (ADS, or per-type api_config_source) start streaming at once; their first
    // responses gate the init stages below as the files do.
    let grpc = match &dynamic {
        Some(plan) if plan.uses_grpc() => {
            let node = grpc_node(&bootstrap, &args);
            Some(
                crate::xds::spawn(
                    plan,
                    node,
                    sink.clone(),
                    &stats,
                    true,
                    sources_stop_rx.clone(),
                )
                .context("starting the xDS client")?,
            )
        }
        _ => None,
    };
    // SDS over its own api_config_source (Istio's sds-grpc) follows the names TLS contexts expect.
    crate::xds::sds::spawn(
        secrets.clone(),
        bootstrap
            .static_resources
            .as_ref()
            .map(|r| r.clusters.clone())
            .unwrap_or_default(),
        grpc_node(&bootstrap, &args),
        sink.clone(),
        stats.clone(),
        sources_stop_rx.clone(),
    );
    let grpc_stats = |kind: Kind| {
        grpc.as_ref().and_then(|g| {
            g.stats
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, s)| s.clone())
        })
    };
    let (grpc_cds, grpc_lds) = (grpc_stats(Kind::Cluster), grpc_stats(Kind::Listener));

    // The admin API answers from the start (`/ready` is 503 until the server is LIVE).
    let server = ServerInfo {
        version: VERSION.to_string(),
        state: ServerStateCell::new(ServerState::PreInitializing),
        started: Instant::now(),
        command_line_options: command_line_json(&args),
        node: bootstrap
            .node
            .as_ref()
            .map(to_json)
            .unwrap_or(serde_json::Value::Null),
    };
    let hooks = AppHooks {
        bootstrap,
        config: config.clone(),
        cds: cds_file
            .as_ref()
            .map(|f| f.stats().clone())
            .or(grpc_cds.clone()),
        lds: lds_file
            .as_ref()
            .map(|f| f.stats().clone())
            .or(grpc_lds.clone()),
        loaded: SystemTime::now(),
    };
    let server_stats = admin::register_server_stats(&stats, workers, VERSION);
    let state = Arc::new(
        AdminState::new(stats.clone(), server.clone(), Arc::new(hooks), log)
            .with_server_stats(server_stats)
            .with_istio(builder.istio.metrics.clone()),
    );
    let mut shutdown_rx = state.shutdown_requested();
    let (admin_stop_tx, admin_stop_rx) = tokio::sync::oneshot::channel::<()>();
    if let Some(addr) = admin_addr {
        let admin_listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding admin address {addr}"))?;
        tokio::spawn(admin::serve(admin_listener, state.clone(), async move {
            let _ = admin_stop_rx.await;
        }));
    }

    // Init order, as Envoy: clusters (CDS, then their EDS or DNS warming), then listeners (LDS, then
    // their RDS), then the server is LIVE and `/ready` answers 200.
    if let Some(cds) = &cds_file {
        let cds = cds.clone();
        let _ = tokio::task::spawn_blocking(move || cds.poll()).await;
    }
    if let (Some(s), Some(plan)) = (&grpc_cds, &dynamic) {
        first_response(s, "CDS", plan.cds_fetch_timeout).await;
    }
    if tokio::time::timeout(INITIAL_FETCH_TIMEOUT, clusters.initialized())
        .await
        .is_err()
    {
        tracing::warn!("clusters still warming after the initial fetch timeout; starting anyway");
    }

    // Bind the static listeners before serving anything, so a bad address fails the start as a whole.
    for (cfg, proto) in listeners {
        let name = cfg.name.clone();
        listener_manager
            .add_static(cfg, proto)
            .map_err(|e| anyhow::anyhow!("binding listener \"{name}\": {}", e.message))?;
    }
    if let Some(lds) = &lds_file {
        let lds = lds.clone();
        let _ = tokio::task::spawn_blocking(move || lds.poll()).await;
    }
    if let (Some(s), Some(plan)) = (&grpc_lds, &dynamic) {
        first_response(s, "LDS", plan.lds_fetch_timeout).await;
    }
    listener_manager.warmed().await;
    for f in cds_file.iter().chain(lds_file.iter()) {
        f.clone().spawn(sources_stop_rx.clone());
    }
    spawn_rds_files(config.routes.clone(), sources_stop_rx.clone());
    spawn_eds_files((*config.clusters).clone(), sources_stop_rx.clone());
    server.state.set(ServerState::Live);
    tracing::info!(
        listeners = listener_manager.views().len(),
        clusters = clusters.iter().count(),
        workers,
        "remora is ready"
    );

    let graceful = tokio::select! {
        _ = terminate() => {
            tracing::info!("signal received; draining");
            true
        }
        _ = shutdown_rx.wait_for(|v| *v) => {
            tracing::info!("quitquitquit received; exiting");
            false
        }
    };
    server.state.set(ServerState::Draining);
    let _ = sources_stop.send(true);
    if graceful {
        // Inbound stops now; outbound serves the application until every connection is done,
        // the drain time is up, or a second signal or `/quitquitquit` says to stop waiting.
        listener_manager.shutdown();
        let drain_time = Duration::from_secs(args.drain_time_s);
        tokio::select! {
            drained = drain_signal.wait_idle(drain_time) => if !drained {
                tracing::warn!(
                    drain_time_s = args.drain_time_s,
                    "drain time elapsed with connections still open"
                );
            },
            _ = terminate() => tracing::info!("second signal received; exiting now"),
            _ = shutdown_rx.wait_for(|v| *v) => tracing::info!("quitquitquit received; exiting now"),
        }
    }
    drain_signal.drain();
    let _ = admin_stop_tx.send(());
    let flush_writers = writers.clone();
    let _ = tokio::task::spawn_blocking(move || flush_writers.flush(Duration::from_secs(2))).await;
    Ok(())
}

/// Waits for the first response of a gRPC subscription (accepted or rejected), as Envoy's init
/// manager does; `timeout` is the source's `initial_fetch_timeout` (`None`: wait as long as it takes,
/// Istio's `0s`).
async fn first_response(stats: &UpdateStats, kind: &str, timeout: Option<Duration>) {
    let wait = async {
        while stats.attempts() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    match timeout {
        Some(t) => {
            if tokio::time::timeout(t, wait).await.is_err() {
                tracing::warn!(%kind, timeout = ?t, "no response from the control plane within initial_fetch_timeout; starting without it");
            }
        }
        None => {
            tracing::info!(%kind, "waiting for the control plane's first response");
            wait.await;
        }
    }
}

/// The node remora announces: the bootstrap's, with `--service-node` / `--service-cluster` as Envoy
/// applies them.
fn grpc_node(
    bootstrap: &envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap,
    args: &ServerArgs,
) -> envoy_types::pb::envoy::config::core::v3::Node {
    let mut node = crate::xds::node(bootstrap);
    if let Some(id) = args.service_node.as_ref().filter(|s| !s.is_empty()) {
        node.id = id.clone();
    }
    if let Some(c) = args.service_cluster.as_ref().filter(|s| !s.is_empty()) {
        node.cluster = c.clone();
    }
    node
}

/// How long init waits for warming clusters and listeners (Envoy's default `initial_fetch_timeout`).
const INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Polls the file-based RDS sources (route configurations named by `rds.config_source.path_config_source`).
fn spawn_rds_files(
    routes: crate::config::rds::RouteRegistry,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::xds::file::POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if routes.has_files() {
                let r = routes.clone();
                let _ = tokio::task::spawn_blocking(move || r.poll_files()).await;
            }
        }
    });
}

/// Polls the file-based EDS sources (`eds_cluster_config.eds_config.path_config_source`).
fn spawn_eds_files(
    clusters: crate::upstream::ClusterManager,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::xds::file::POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let c = clusters.clone();
            let _ = tokio::task::spawn_blocking(move || c.poll_eds_files()).await;
        }
    });
}

/// The watcher of a file-based LDS or CDS source, counted under Envoy's names.
fn file_source(
    source: &TypeSource,
    kind: Kind,
    sink: &Arc<dyn crate::xds::ConfigSink>,
    stats: &Store,
) -> Option<Arc<FileSource>> {
    let TypeSource::File(cs) = source else {
        return None;
    };
    let path = crate::xds::file::path_of(cs)?;
    let prefix = match kind {
        Kind::Listener => "listener_manager.lds.",
        _ => "cluster_manager.cds.",
    };
    Some(Arc::new(FileSource::new(
        path,
        kind,
        sink.clone(),
        UpdateStats::new(stats, prefix),
    )))
}

/// Hands an accepted connection to its chain's terminal filter, through the chain's TLS context
/// when it has one.
pub(crate) async fn serve_connection(mut acc: Accepted<ChainStack>, detector: Arc<Detector>) {
    // Detect: listeners with listener filters choose the chain from the connection's first bytes.
    let mut requested_server_name = None;
    if acc.chain.is_none() {
        let detected = match detector.run(&acc.stream, acc.local).await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "listener filters; closing");
                return;
            }
        };
        let protocols = detected.protocols();
        if acc
            .select(&detected.match_input(acc.local, acc.peer, &protocols))
            .is_none()
        {
            tracing::debug!(?detected, "no matching filter chain; closing");
            return;
        }
        requested_server_name = detected.server_name.clone();
    }
    let Some(ChainStack {
        tls,
        filters,
        stack,
    }) = acc.chain().cloned()
    else {
        return;
    };
    let info = ConnInfo {
        id: acc.id,
        peer: acc.peer,
        local: acc.local,
        scheme: "http",
        tls: None,
        requested_server_name,
        filter_state: Default::default(),
        internal_listener: None,
    };
    match tls {
        None => {
            serve_filtered(acc.stream, info, &filters, stack, acc.drain).await;
        }
        Some(tls) => {
            // Not TLS at all: answer as BoringSSL (and so Envoy) does. Plain HTTP gets a silent close
            // (an HTTP client would print alert bytes as a response), other bytes a fatal
            // protocol_version alert.
            match crate::detect::tls_start(&acc.stream).await {
                TlsStart::Handshake => {}
                start => {
                    tls.stats().connection_error.inc();
                    tracing::debug!(peer = %acc.peer, ?start, "not a TLS handshake on a TLS filter chain; closing");
                    if start == TlsStart::Garbage {
                        use tokio::io::AsyncWriteExt;
                        // An alert record: TLS 1.0 framing, length 2, fatal (2), protocol_version (70).
                        let mut stream = acc.stream;
                        let _ = stream
                            .write_all(&[0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46])
                            .await;
                        let _ = stream.shutdown().await;
                    }
                    return;
                }
            }
            // A failed handshake is counted and logged by the TLS stage; the connection just ends.
            if let Ok((stream, tls_info)) = Box::pin(tls.accept(acc.stream, acc.peer)).await {
                let info = ConnInfo {
                    scheme: "https",
                    tls: Some(Arc::new(tls_info)),
                    ..info
                };
                serve_filtered(stream, info, &filters, stack, acc.drain).await;
            }
        }
    }
}

/// Serves a connection an internal listener took: its chain's TLS, network filters and terminal
/// filter (internal listeners have no listener filters but `original_dst`).
pub(crate) async fn serve_internal(acc: InternalAccepted<ChainStack>) {
    let Some(ChainStack {
        tls,
        filters,
        stack,
    }) = acc.chain().cloned()
    else {
        return;
    };
    let info = ConnInfo {
        id: acc.id,
        peer: acc.peer,
        local: acc.local,
        scheme: "http",
        tls: None,
        requested_server_name: None,
        filter_state: acc.filter_state,
        internal_listener: Some(acc.listener.config.name.as_str().into()),
    };
    match tls {
        None => {
            serve_filtered(acc.stream, info, &filters, stack, acc.drain).await;
        }
        // TLS bytes a tcp_proxy carried in (a failed handshake is counted by the TLS stage).
        Some(tls) => {
            if let Ok((stream, tls_info)) = Box::pin(tls.accept(acc.stream, acc.peer)).await {
                let info = ConnInfo {
                    scheme: "https",
                    tls: Some(Arc::new(tls_info)),
                    ..info
                };
                serve_filtered(stream, info, &filters, stack, acc.drain).await;
            }
        }
    }
}

/// The chain's network filters (`set_filter_state`, `istio_authn`, then RBAC), then its terminal
/// filter unless a filter refused the connection.
async fn serve_filtered<S>(
    stream: S,
    mut info: ConnInfo,
    filters: &crate::network::NetworkFilters,
    stack: NetworkStack,
    drain: drain::Watch,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    filters.on_new_connection(&mut info);
    if filters.is_empty() || filters.admit(&info).await {
        // Boxed, so that a connection's task holds only the future of the path it takes.
        Box::pin(serve_stack(stream, info, stack, drain)).await;
    }
}

async fn serve_stack<S>(stream: S, info: ConnInfo, stack: NetworkStack, drain: drain::Watch)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match stack {
        NetworkStack::Http(rt) => crate::http::server::serve(stream, info, rt, drain).await,
        NetworkStack::Tcp(rt) => {
            let tls = info.tls.as_deref();
            let conn = crate::tcp::Downstream {
                peer: info.peer,
                local: info.local,
                id: info.id,
                tls,
                filter_state: &info.filter_state,
                internal_listener: info.internal_listener.as_deref(),
            };
            crate::tcp::serve(stream, conn, rt, drain).await
        }
    }
}

async fn terminate() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
