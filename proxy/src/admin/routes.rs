//! Admin request dispatch: one function per endpoint, Envoy's status codes and texts.

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use regex::Regex;

use crate::http::body::{full, BoxBody};
use crate::logging::Level;
use crate::stats::render;

use super::config_dump::{self, DumpError};
use super::query::Query;
use super::{AdminState, DrainListeners, ServerState};

const TEXT: &str = "text/plain; charset=UTF-8";
const JSON: &str = "application/json";

/// (path, POST only, help text), in the order `/help` lists them.
const ENDPOINTS: &[(&str, bool, &str)] = &[
    ("/", false, "Admin home page"),
    ("/clusters", false, "upstream cluster status"),
    ("/config_dump", false, "dump current Envoy configs"),
    ("/drain_listeners", true, "drain listeners"),
    (
        "/healthcheck/fail",
        true,
        "cause the server to fail health checks",
    ),
    (
        "/healthcheck/ok",
        true,
        "cause the server to pass health checks",
    ),
    ("/help", false, "print out list of admin commands"),
    (
        "/hot_restart_version",
        false,
        "print the hot restart compatibility version",
    ),
    ("/listeners", false, "print listener info"),
    ("/logging", true, "query/change logging levels"),
    ("/quitquitquit", true, "exit the server"),
    (
        "/ready",
        false,
        "print server state, return 200 if LIVE, otherwise return 503",
    ),
    (
        "/server_info",
        false,
        "print server version/status information",
    ),
    ("/stats", false, "print server stats"),
    (
        "/stats/prometheus",
        false,
        "print server stats in prometheus format",
    ),
];

fn help() -> String {
    let mut out = String::from("admin commands are:\n");
    for (path, post, text) in ENDPOINTS {
        let post = if *post { " (POST)" } else { "" };
        out.push_str(&format!("  {path}{post}: {text}\n"));
    }
    out
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<bytes::Bytes>,
) -> Response<BoxBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, max-age=0"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn ok_text(body: impl Into<bytes::Bytes>) -> Response<BoxBody> {
    respond(StatusCode::OK, TEXT, body)
}

fn bad_request(body: impl Into<bytes::Bytes>) -> Response<BoxBody> {
    respond(StatusCode::BAD_REQUEST, TEXT, body)
}

/// Envoy's pretty JSON: one-space indentation.
fn pretty(value: &serde_json::Value) -> String {
    use serde::Serialize as _;
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut buf,
        serde_json::ser::PrettyFormatter::with_indent(b" "),
    );
    // Serialising a Value into memory cannot fail.
    let _ = value.serialize(&mut ser);
    String::from_utf8_lossy(&buf).into_owned()
}

pub fn handle<B>(state: &AdminState, req: Request<B>) -> Response<BoxBody> {
    let path = req.uri().path();
    let query = Query::parse(req.uri().query());
    let Some((_, post_only, _)) = ENDPOINTS.iter().find(|(p, _, _)| *p == path) else {
        return respond(
            StatusCode::NOT_FOUND,
            TEXT,
            format!("invalid path. {}", help()),
        );
    };
    if *post_only && req.method() != Method::POST {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            format!("Method {} not allowed, POST required.", req.method()),
        );
    }
    match path {
        "/" | "/help" => ok_text(help()),
        "/ready" => ready(state),
        "/server_info" => respond(StatusCode::OK, JSON, pretty(&server_info(state))),
        "/hot_restart_version" => ok_text("disabled"),
        "/stats" => stats(state, &query),
        "/stats/prometheus" => prometheus_stats(state, &query),
        "/config_dump" => config_dump(state, &query),
        "/clusters" => listing(&query, |json| state.hooks.clusters(json)),
        "/listeners" => listing(&query, |json| state.hooks.listeners(json)),
        "/logging" => logging(state, &query),
        "/quitquitquit" => {
            tracing::info!("shutting down on admin request");
            state.request_shutdown();
            ok_text("OK\n")
        }
        "/healthcheck/fail" => {
            state.set_health_failed(true);
            ok_text("OK\n")
        }
        "/healthcheck/ok" => {
            state.set_health_failed(false);
            ok_text("OK\n")
        }
        "/drain_listeners" => {
            state.hooks.drain_listeners(DrainListeners {
                inbound_only: query.has("inboundonly"),
                graceful: query.has("graceful"),
                skip_exit: query.has("skip_exit"),
            });
            ok_text("OK\n")
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            TEXT,
            format!("invalid path. {}", help()),
        ),
    }
}

/// What `/ready` and `/server_info` call the state: a failed health check reads as DRAINING, as in Envoy.
fn effective_state(state: &AdminState) -> ServerState {
    match state.server.state.get() {
        ServerState::Live if state.health_failed() => ServerState::Draining,
        s => s,
    }
}

fn ready(state: &AdminState) -> Response<BoxBody> {
    let s = effective_state(state);
    let status = if s == ServerState::Live {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    respond(status, TEXT, format!("{}\n", s.as_str()))
}

fn server_info(state: &AdminState) -> serde_json::Value {
    let uptime = format!("{}s", state.server.uptime().as_secs());
    serde_json::json!({
        "version": state.server.version,
        "state": effective_state(state).as_str(),
        "uptime_current_epoch": uptime,
        "uptime_all_epochs": uptime,
        "hot_restart_version": "disabled",
        "command_line_options": state.server.command_line_options,
        "node": state.server.node,
    })
}

fn filter_regex(query: &Query) -> Result<Option<Regex>, Box<Response<BoxBody>>> {
    match query.get("filter").filter(|f| !f.is_empty()) {
        None => Ok(None),
        Some(f) => Regex::new(f)
            .map(Some)
            .map_err(|e| Box::new(bad_request(format!("Invalid re2 regex: {e}")))),
    }
}

fn stats(state: &AdminState, query: &Query) -> Response<BoxBody> {
    let filter = match filter_regex(query) {
        Ok(f) => f,
        Err(resp) => return *resp,
    };
    let used_only = query.has("usedonly");
    state.refresh_server_stats();
    match query.get("format").unwrap_or("text") {
        "text" | "" => ok_text(render::text(&state.stats, filter.as_ref(), used_only)),
        "json" => respond(
            StatusCode::OK,
            JSON,
            render::json(&state.stats, filter.as_ref(), used_only),
        ),
        "prometheus" => ok_text(state.prometheus(used_only, filter.as_ref())),
        _ => bad_request("usage: /stats?format=(json|prometheus|text)\n"),
    }
}

fn prometheus_stats(state: &AdminState, query: &Query) -> Response<BoxBody> {
    let filter = match filter_regex(query) {
        Ok(f) => f,
        Err(resp) => return *resp,
    };
    state.refresh_server_stats();
    ok_text(state.prometheus(query.has("usedonly"), filter.as_ref()))
}

fn config_dump(state: &AdminState, query: &Query) -> Response<BoxBody> {
    let dump = state.hooks.config_dump();
    match config_dump::select(
        dump,
        query.get("resource"),
        query.get("mask").filter(|m| !m.is_empty()),
    ) {
        Ok(v) => respond(StatusCode::OK, JSON, pretty(&v)),
        Err(DumpError::NotFound(msg)) => respond(StatusCode::NOT_FOUND, TEXT, msg),
        Err(DumpError::BadRequest(msg)) => bad_request(msg),
    }
}

fn listing(query: &Query, render: impl FnOnce(bool) -> String) -> Response<BoxBody> {
    match query.get("format") {
        Some("json") => respond(StatusCode::OK, JSON, render(true)),
        None | Some("text") | Some("") => ok_text(render(false)),
        Some(_) => bad_request("usage: format=(text|json)\n"),
    }
}

const LOGGING_USAGE: &str = "\
usage: /logging?<name>=<level> (change single level)
usage: /logging?paths=name1:level1,name2:level2,... (change multiple levels)
usage: /logging?level=<level> (change all levels)
usage: /logging?group=<group_name>:<level> (change group of loggers)
levels: trace debug info warning error critical off 
";

fn logging(state: &AdminState, query: &Query) -> Response<BoxBody> {
    let fail = |error: &str| {
        bad_request(format!(
            "error: {error}\n\n{LOGGING_USAGE}{}",
            state.log.active_loggers()
        ))
    };
    let pairs = query.pairs();
    if pairs.len() > 1 {
        return fail("invalid number of parameters");
    }
    if let Some((key, value)) = pairs.first() {
        let result = match key.as_str() {
            "level" => match Level::parse(value) {
                Ok(level) => state.log.set_level(level),
                Err(_) => return fail("unknown logger level"),
            },
            "paths" | "group" => {
                let mut parsed = Vec::new();
                for item in value.split(',').filter(|s| !s.is_empty()) {
                    let Some((name, level)) = item.split_once(':') else {
                        return fail("invalid format for paths");
                    };
                    let Ok(level) = Level::parse(level) else {
                        return fail("unknown logger level");
                    };
                    parsed.push((name.to_string(), level));
                }
                state.log.set_components(&parsed)
            }
            name => match Level::parse(value) {
                Ok(level) => state.log.set_component(name, level),
                Err(_) => return fail("unknown logger level"),
            },
        };
        match result {
            Ok(()) => {}
            Err(crate::logging::LoggingError::UnknownLogger(_)) => {
                return fail("unknown logger name")
            }
            Err(e) => return fail(&e.to_string()),
        }
    }
    ok_text(state.log.active_loggers())
}
