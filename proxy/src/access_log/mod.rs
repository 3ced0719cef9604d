//! Access logs: Envoy's command-operator formats written to files or standard streams.
//!
//! `AccessLogs::from_protos` turns a listener's or connection manager's `access_log` list into loggers
//! once, at configuration time: formats are parsed into tokens, filters compiled and files opened. At
//! the end of each stream the caller fills a `LogContext` and calls `log`, which filters, formats on the
//! calling task and queues the line to the destination's writer thread.

pub mod context;
mod filter;
pub mod format;
#[cfg(test)]
mod tests;
mod writer;

use std::sync::Arc;

use envoy_types::pb::envoy::config::accesslog::v3::{access_log::ConfigType, AccessLog};
use envoy_types::pb::envoy::config::core::v3::{
    data_source::Specifier, substitution_format_string::Format as SfsFormat, DataSource,
    SubstitutionFormatString,
};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{
    file_access_log::AccessLogFormat as FileFormat, FileAccessLog,
};
use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{
    stderr_access_log, stdout_access_log, StderrAccessLog, StdoutAccessLog,
};

pub use context::LogContext;
pub use filter::long_flag;
pub use writer::{Sink, Writers, DEFAULT_QUEUE_LINES};

use crate::config::parse::{any_type_name, unpack_any, ParseOptions};
use crate::config::{ConfigErrors, Path};
use filter::Filter;
use format::{JsonNode, Token};

#[derive(Debug, Clone)]
enum LineFormat {
    Text(Vec<Token>),
    /// Rendered compactly, one object per line.
    Json(JsonNode),
}

#[derive(Debug, Clone)]
struct Logger {
    filter: Option<Filter>,
    format: LineFormat,
    omit_empty: bool,
    sink: Sink,
}

impl Logger {
    fn line(&self, ctx: &LogContext<'_>) -> String {
        let mut out = String::with_capacity(256);
        match &self.format {
            LineFormat::Text(tokens) => format::render_text(tokens, ctx, self.omit_empty, &mut out),
            LineFormat::Json(node) => {
                if !format::render_json(node, ctx, self.omit_empty, &mut out) {
                    out.push_str("{}");
                }
                out.push('\n');
            }
        }
        out
    }
}

/// The access loggers of one listener or connection manager. Cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct AccessLogs {
    loggers: Arc<[Logger]>,
}

const FILE: &str = "envoy.extensions.access_loggers.file.v3.FileAccessLog";
const STDOUT: &str = "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
const STDERR: &str = "envoy.extensions.access_loggers.stream.v3.StderrAccessLog";

impl AccessLogs {
    /// Compiles `protos`; `path` is the `access_log` field they came from. Every problem is reported.
    pub fn from_protos(
        protos: &[AccessLog],
        path: &Path,
        writers: &Writers,
    ) -> Result<AccessLogs, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let mut loggers = Vec::with_capacity(protos.len());
        for (i, proto) in protos.iter().enumerate() {
            if let Some(l) = logger(proto, &path.index(i), writers, &mut errors) {
                loggers.push(l);
            }
        }
        errors.finish(AccessLogs {
            loggers: loggers.into(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.loggers.is_empty()
    }

    /// Writes one line per logger whose filter accepts the stream. Never blocks.
    pub fn log(&self, ctx: &LogContext<'_>) {
        for l in self.loggers.iter() {
            if l.filter.as_ref().is_none_or(|f| f.matches(ctx)) {
                l.sink.write(l.line(ctx));
            }
        }
    }

    /// The lines `log` would write, without writing them (for tests and `/config_dump`-style checks).
    pub fn render(&self, ctx: &LogContext<'_>) -> Vec<String> {
        self.loggers
            .iter()
            .filter(|l| l.filter.as_ref().is_none_or(|f| f.matches(ctx)))
            .map(|l| l.line(ctx))
            .collect()
    }
}

/// A `SubstitutionFormatString` compiled once, rendered per stream without a trailing newline
/// (the values of `set_filter_state`).
#[derive(Debug, Clone)]
pub struct Formatter {
    format: LineFormat,
    omit_empty: bool,
}

impl Formatter {
    /// Compiles `sfs` found at `path`; problems go to `errors`.
    pub fn from_proto(
        sfs: &SubstitutionFormatString,
        path: &Path,
        errors: &mut ConfigErrors,
    ) -> Option<Formatter> {
        Some(Formatter {
            format: substitution_format(sfs, path, errors)?,
            omit_empty: sfs.omit_empty_values,
        })
    }

    pub fn render(&self, ctx: &LogContext<'_>) -> String {
        let mut out = String::new();
        match &self.format {
            LineFormat::Text(tokens) => format::render_text(tokens, ctx, self.omit_empty, &mut out),
            LineFormat::Json(node) => {
                format::render_json(node, ctx, self.omit_empty, &mut out);
            }
        }
        out
    }
}

fn logger(
    proto: &AccessLog,
    path: &Path,
    writers: &Writers,
    errors: &mut ConfigErrors,
) -> Option<Logger> {
    let filter = proto
        .filter
        .as_ref()
        .map(|f| Filter::from_proto(f, &path.field("filter"), errors));
    let Some(ConfigType::TypedConfig(any)) = &proto.config_type else {
        errors.push(path.field("typed_config"), "typed_config is required");
        return None;
    };
    let tc = path.field("typed_config");
    let unpack_err = |e: crate::config::ConfigError| e.message;
    let (dest, sfs, legacy): (String, Option<SubstitutionFormatString>, Option<LineFormat>) =
        match any_type_name(any).as_str() {
            FILE => {
                let cfg: FileAccessLog = match unpack_any(any, ParseOptions::default()) {
                    Ok(c) => c,
                    Err(e) => {
                        errors.push(&tc, unpack_err(e));
                        return None;
                    }
                };
                if cfg.path.is_empty() {
                    errors.push(tc.field("path"), "path must not be empty");
                    return None;
                }
                #[allow(deprecated)]
                let (sfs, legacy) = match cfg.access_log_format {
                    None => (None, None),
                    Some(FileFormat::LogFormat(f)) => (Some(f), None),
                    Some(FileFormat::Format(s)) if s.is_empty() => (None, None),
                    Some(FileFormat::Format(s)) => {
                        (None, Some(text_format(&s, &tc.field("format"), errors)?))
                    }
                    Some(FileFormat::JsonFormat(s)) | Some(FileFormat::TypedJsonFormat(s)) => (
                        None,
                        Some(json_format(&s, &tc.field("json_format"), errors)?),
                    ),
                };
                (cfg.path, sfs, legacy)
            }
            STDOUT => {
                let cfg: StdoutAccessLog = unpack_any(any, ParseOptions::default())
                    .map_err(|e| errors.push(&tc, unpack_err(e)))
                    .ok()?;
                let sfs = cfg
                    .access_log_format
                    .map(|stdout_access_log::AccessLogFormat::LogFormat(f)| f);
                ("/dev/stdout".to_string(), sfs, None)
            }
            STDERR => {
                let cfg: StderrAccessLog = unpack_any(any, ParseOptions::default())
                    .map_err(|e| errors.push(&tc, unpack_err(e)))
                    .ok()?;
                let sfs = cfg
                    .access_log_format
                    .map(|stderr_access_log::AccessLogFormat::LogFormat(f)| f);
                ("/dev/stderr".to_string(), sfs, None)
            }
            other => {
                errors.push(&tc, format!("unsupported access logger type {other:?}"));
                return None;
            }
        };
    let (format, omit_empty) = match (sfs, legacy) {
        (_, Some(legacy)) => (legacy, false),
        (Some(sfs), None) => {
            let omit = sfs.omit_empty_values;
            (
                substitution_format(&sfs, &tc.field("log_format"), errors)?,
                omit,
            )
        }
        (None, None) => (text_format(format::DEFAULT_FORMAT, &tc, errors)?, false),
    };
    let sink = match writers.open(&dest) {
        Ok(s) => s,
        Err(e) => {
            errors.push(tc.field("path"), format!("cannot open {dest:?}: {e}"));
            return None;
        }
    };
    Some(Logger {
        // A filter that failed to compile was reported; the logger is dropped with the whole config.
        filter: filter.flatten(),
        format,
        omit_empty,
        sink,
    })
}

fn text_format(s: &str, path: &Path, errors: &mut ConfigErrors) -> Option<LineFormat> {
    match format::parse(s) {
        Ok(tokens) => Some(LineFormat::Text(tokens)),
        Err(e) => {
            errors.push(path, e);
            None
        }
    }
}

fn json_format(
    s: &envoy_types::pb::google::protobuf::Struct,
    path: &Path,
    errors: &mut ConfigErrors,
) -> Option<LineFormat> {
    match format::compile_json(s) {
        Ok(node) => Some(LineFormat::Json(node)),
        Err((key, e)) => {
            errors.push(format!("{path}.{key}"), e);
            None
        }
    }
}

fn substitution_format(
    sfs: &SubstitutionFormatString,
    path: &Path,
    errors: &mut ConfigErrors,
) -> Option<LineFormat> {
    if !sfs.formatters.is_empty() {
        errors.push(
            path.field("formatters"),
            "formatter extensions are not supported",
        );
        return None;
    }
    #[allow(deprecated)]
    match &sfs.format {
        None => text_format(format::DEFAULT_FORMAT, path, errors),
        Some(SfsFormat::TextFormat(s)) => text_format(s, &path.field("text_format"), errors),
        Some(SfsFormat::JsonFormat(s)) => json_format(s, &path.field("json_format"), errors),
        Some(SfsFormat::TextFormatSource(ds)) => {
            let p = path.field("text_format_source");
            let text = data_source(ds, &p, errors)?;
            text_format(&text, &p, errors)
        }
    }
}

/// A DataSource's text, read now (Envoy reads format files at configuration time too).
fn data_source(ds: &DataSource, path: &Path, errors: &mut ConfigErrors) -> Option<String> {
    let r = match &ds.specifier {
        Some(Specifier::InlineString(s)) => Ok(s.clone()),
        Some(Specifier::InlineBytes(b)) => {
            String::from_utf8(b.clone()).map_err(|_| "inline_bytes is not UTF-8".to_string())
        }
        Some(Specifier::Filename(f)) => {
            std::fs::read_to_string(f).map_err(|e| format!("cannot read {f:?}: {e}"))
        }
        Some(Specifier::EnvironmentVariable(v)) => {
            std::env::var(v).map_err(|_| format!("environment variable {v:?} is not set"))
        }
        None => Err("a data source must be set".to_string()),
    };
    r.map_err(|e| errors.push(path, e)).ok()
}
