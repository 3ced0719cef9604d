//! `access_log` lists from Envoy YAML: logger types, formats, filters, errors with paths, and output.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use http::{HeaderMap, HeaderValue};

use super::*;
use crate::config::parse::from_yaml;
use crate::stats::Store;

fn temp_path(name: &str) -> String {
    std::env::temp_dir()
        .join(format!("remora-al-{}-{name}", std::process::id()))
        .to_string_lossy()
        .into_owned()
}

fn writers() -> Writers {
    Writers::new(&Store::new(), Duration::from_secs(3600))
}

/// The `access_log` list of an HCM written as YAML.
fn protos(yaml: &str) -> Vec<AccessLog> {
    let hcm: HttpConnectionManager = from_yaml(
        &format!("stat_prefix: p\naccess_log:\n{yaml}"),
        ParseOptions::default(),
    )
    .expect("valid HCM YAML");
    hcm.access_log
}

fn build(yaml: &str) -> Result<AccessLogs, ConfigErrors> {
    AccessLogs::from_protos(
        &protos(yaml),
        &Path::root("hcm").field("access_log"),
        &writers(),
    )
}

fn file_log(path: &str, extra: &str) -> String {
    format!(
        "- name: envoy.access_loggers.file\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n    path: {path}\n{extra}"
    )
}

fn ctx(code: u16) -> LogContext<'static> {
    LogContext {
        method: Some("GET"),
        path: Some("/x"),
        protocol: Some("HTTP/1.1"),
        response_code: Some(code),
        duration: Some(Duration::from_millis(30)),
        ..LogContext::new(UNIX_EPOCH + Duration::from_secs(1_796_226_303))
    }
}

#[test]
fn file_logger_writes_default_format_to_its_path() {
    let path = temp_path("default.log");
    let _ = std::fs::remove_file(&path);
    let w = writers();
    let logs = AccessLogs::from_protos(&protos(&file_log(&path, "")), &Path::root("x"), &w)
        .expect("valid");
    assert!(!logs.is_empty());
    logs.log(&ctx(200));
    assert!(w.flush(Duration::from_secs(5)));
    assert_eq!(
        std::fs::read_to_string(&path).expect("written"),
        "[2026-12-02T15:45:03.000Z] \"GET /x HTTP/1.1\" 200 - 0 0 30 - \"-\" \"-\" \"-\" \"-\" \"-\"\n"
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn log_format_variants() {
    let fmt_file = temp_path("fmt.txt");
    std::fs::write(&fmt_file, "%RESPONSE_CODE% from file\n").expect("write format file");
    let cases = [
        ("    log_format: {text_format_source: {inline_string: \"%RESPONSE_CODE% %REQ(:PATH)%\\n\"}}\n", "200 /x\n"),
        (&*format!("    log_format: {{text_format_source: {{filename: {fmt_file}}}}}\n"), "200 from file\n"),
        ("    log_format: {text_format: \"%PROTOCOL%\\n\"}\n", "HTTP/1.1\n"),
        ("    log_format: {json_format: {code: \"%RESPONSE_CODE%\", p: \"%REQ(:PATH)%\"}}\n", "{\"code\":200,\"p\":\"/x\"}\n"),
        ("    log_format: {omit_empty_values: true, json_format: {u: \"%UPSTREAM_HOST%\", c: \"%RESPONSE_CODE%\"}}\n", "{\"c\":200}\n"),
        ("    log_format: {content_type: text/plain, text_format_source: {inline_string: \"[%UPSTREAM_HOST%]\"}, omit_empty_values: true}\n", "[]"),
        ("    format: \"legacy %RESPONSE_CODE%\\n\"\n", "legacy 200\n"),
        ("    json_format: {legacy: \"%DURATION%\"}\n", "{\"legacy\":30}\n"),
    ];
    for (extra, want) in cases {
        let logs = build(&file_log(&temp_path("variants.log"), extra)).expect(extra);
        assert_eq!(logs.render(&ctx(200)), vec![want.to_string()], "{extra}");
    }
    let _ = std::fs::remove_file(&fmt_file);
}

#[test]
fn stdout_and_stderr_loggers() {
    let yaml = "- name: envoy.access_loggers.stdout\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog\n    log_format: {text_format_source: {inline_string: \"out %RESPONSE_CODE%\\n\"}}\n\
- name: envoy.access_loggers.stderr\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog\n";
    let logs = build(yaml).expect("valid");
    let lines = logs.render(&ctx(503));
    assert_eq!(lines[0], "out 503\n");
    assert!(lines[1].contains("\"GET /x HTTP/1.1\" 503 "));
}

#[test]
fn filters_select_streams() {
    let with_filter = |filter: &str| {
        build(&format!(
            "{}  filter:\n{filter}",
            file_log(&temp_path("filters.log"), "")
        ))
        .expect(filter)
    };
    let status = with_filter("    status_code_filter: {comparison: {op: GE, value: {default_value: 400, runtime_key: k}}}\n");
    assert!(status.render(&ctx(200)).is_empty());
    assert_eq!(status.render(&ctx(503)).len(), 1);

    let duration = with_filter(
        "    duration_filter: {comparison: {op: LE, value: {default_value: 10, runtime_key: k}}}\n",
    );
    assert!(duration.render(&ctx(200)).is_empty());

    let not_hc = with_filter("    not_health_check_filter: {}\n");
    let hc = LogContext {
        is_health_check: true,
        ..ctx(200)
    };
    assert!(not_hc.render(&hc).is_empty());
    assert_eq!(not_hc.render(&ctx(200)).len(), 1);

    let flags = with_filter("    response_flag_filter: {flags: [UH, NR]}\n");
    assert!(flags.render(&ctx(200)).is_empty());
    assert_eq!(
        flags
            .render(&LogContext {
                response_flags: "UF,NR",
                ..ctx(404)
            })
            .len(),
        1
    );
    let any_flag = with_filter("    response_flag_filter: {}\n");
    assert_eq!(
        any_flag
            .render(&LogContext {
                response_flags: "UF",
                ..ctx(503)
            })
            .len(),
        1
    );
    assert!(any_flag.render(&ctx(200)).is_empty());

    let mut h = HeaderMap::new();
    h.insert("x-debug", HeaderValue::from_static("Yes-please"));
    let with_header = LogContext {
        request_headers: Some(&h),
        ..ctx(200)
    };
    let header = with_filter("    header_filter: {header: {name: X-Debug, string_match: {prefix: yes, ignore_case: true}}}\n");
    assert_eq!(header.render(&with_header).len(), 1);
    assert!(header.render(&ctx(200)).is_empty());
    let absent =
        with_filter("    header_filter: {header: {name: x-debug, present_match: false}}\n");
    assert!(absent.render(&with_header).is_empty());
    assert_eq!(absent.render(&ctx(200)).len(), 1);
    let inverted = with_filter(
        "    header_filter: {header: {name: x-debug, exact_match: nope, invert_match: true}}\n",
    );
    assert_eq!(inverted.render(&with_header).len(), 1);

    let and = with_filter("    and_filter: {filters: [{status_code_filter: {comparison: {op: GE, value: {default_value: 500, runtime_key: k}}}}, {not_health_check_filter: {}}]}\n");
    assert_eq!(and.render(&ctx(503)).len(), 1);
    assert!(and
        .render(&LogContext {
            is_health_check: true,
            ..ctx(503)
        })
        .is_empty());
    let or = with_filter("    or_filter: {filters: [{status_code_filter: {comparison: {op: EQ, value: {default_value: 404, runtime_key: k}}}}, {duration_filter: {comparison: {op: GE, value: {default_value: 1000, runtime_key: k}}}}]}\n");
    assert_eq!(or.render(&ctx(404)).len(), 1);
    assert!(or.render(&ctx(200)).is_empty());
}

#[test]
fn config_errors_name_their_paths() {
    let p = temp_path("errors.log");
    let filtered = format!(
        "{}  filter:\n    or_filter: {{filters: [{{not_health_check_filter: {{}}}}, {{runtime_filter: {{runtime_key: r}}}}, {{response_flag_filter: {{flags: [ZZ]}}}}]}}\n",
        file_log(&p, "")
    );
    let yaml = format!(
        "{}{}{filtered}- name: bad.type\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig\n",
        file_log(&p, "    log_format: {text_format_source: {inline_string: \"%RESPONSE_CODE% %NOPE%\"}}\n"),
        file_log(&p, "    log_format: {json_format: {a: {b: \"%ALSO_NOPE%\"}}}\n"),
    );
    let errors = build(&yaml).expect_err("invalid");
    let rendered: Vec<String> = errors.0.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        rendered,
        vec![
            "hcm.access_log[0].typed_config.log_format.text_format_source: unknown command operator %NOPE%",
            "hcm.access_log[1].typed_config.log_format.json_format.a.b: unknown command operator %ALSO_NOPE%",
            "hcm.access_log[2].filter.or_filter.filters[1].runtime_filter: runtime_filter is not supported",
            "hcm.access_log[2].filter.or_filter.filters[2].response_flag_filter.flags[0]: unknown response flag \"ZZ\"",
            "hcm.access_log[3].typed_config: unsupported access logger type \"envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig\"",
        ]
    );
    let unopenable = build(&file_log("/nonexistent-dir/a.log", "")).expect_err("cannot open");
    assert!(unopenable.0[0]
        .to_string()
        .starts_with("hcm.access_log[0].typed_config.path: cannot open"));
    let _ = std::fs::remove_file(&p);
}

#[test]
fn empty_list_logs_nothing() {
    let logs = AccessLogs::from_protos(&[], &Path::root("x"), &writers()).expect("empty");
    assert!(logs.is_empty());
    logs.log(&LogContext::new(SystemTime::now()));
}
