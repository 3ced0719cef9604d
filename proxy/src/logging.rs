//! Process logging: Envoy's `-l`, `--component-log-level` and `--log-path`, and the `/logging` control.
//!
//! Envoy levels are set per component (`upstream`, `http`, `connection`, ...); remora maps each component
//! onto the module targets that do that work and turns the whole table into one `EnvFilter`, reloaded
//! whenever `/logging` changes a level. Other crates (hyper, rustls, ...) stay at `warn` unless the level
//! asked for is quieter, so `-l debug` shows remora's decisions rather than every read; h2 follows Envoy's
//! `http2` component.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, EnvFilter};

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("unknown log level {0:?} (trace, debug, info, warning, error, critical, off)")]
    UnknownLevel(String),
    #[error("unknown logger name {0:?}")]
    UnknownLogger(String),
    #[error("invalid component log level {0:?}: expected <component>:<level>[,...]")]
    InvalidComponentLevel(String),
    #[error("cannot open log path {path}: {source}")]
    OpenLogPath {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a global logger is already installed")]
    AlreadyInitialized,
    #[error("cannot apply log levels: {0}")]
    Reload(String),
}

/// Envoy's log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warning,
    Error,
    Critical,
    Off,
}

impl Level {
    pub fn parse(s: &str) -> Result<Level, LoggingError> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "trace" => Level::Trace,
            "debug" => Level::Debug,
            "info" => Level::Info,
            "warning" | "warn" => Level::Warning,
            "error" => Level::Error,
            "critical" => Level::Critical,
            "off" => Level::Off,
            _ => return Err(LoggingError::UnknownLevel(s.to_string())),
        })
    }

    /// The name Envoy prints in `/logging`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
            Level::Critical => "critical",
            Level::Off => "off",
        }
    }

    fn filter(self) -> LevelFilter {
        match self {
            Level::Trace => LevelFilter::TRACE,
            Level::Debug => LevelFilter::DEBUG,
            Level::Info => LevelFilter::INFO,
            Level::Warning => LevelFilter::WARN,
            // tracing has no level above error.
            Level::Error | Level::Critical => LevelFilter::ERROR,
            Level::Off => LevelFilter::OFF,
        }
    }
}

/// Envoy's component loggers that remora answers for, with the targets doing that component's work.
/// Components with no targets are accepted (scripts set them) but change nothing.
const COMPONENTS: &[(&str, &[&str])] = &[
    ("admin", &["remora_proxy::admin"]),
    ("config", &["remora_proxy::config", "remora_xds_client"]),
    ("conn_handler", &["remora_proxy::listener"]),
    (
        "connection",
        &["remora_proxy::listener", "remora_proxy::detect"],
    ),
    ("dns", &[]),
    ("file", &["remora_proxy::access_log"]),
    ("filter", &["remora_proxy::tcp"]),
    ("grpc", &["remora_xds_client"]),
    ("hc", &["remora_proxy::upstream::health"]),
    ("health_checker", &["remora_proxy::upstream::health"]),
    ("http", &["remora_proxy::http"]),
    ("http2", &["h2"]),
    ("init", &[]),
    ("main", &["remora", "remora_proxy::app"]),
    ("misc", &[]),
    ("pool", &["remora_proxy::upstream"]),
    ("rbac", &[]),
    ("rds", &["remora_proxy::config"]),
    ("router", &["remora_proxy::http"]),
    ("runtime", &[]),
    ("secret", &["remora_certs", "remora_proxy::tls"]),
    ("stats", &["remora_proxy::stats"]),
    ("tracing", &[]),
    ("upstream", &["remora_proxy::upstream"]),
];

/// remora's own crates, which follow the default level.
const OWN_CRATES: &[&str] = &[
    "remora",
    "remora_proxy",
    "remora_xds_client",
    "remora_certs",
];

type Apply = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

struct Levels {
    default: Level,
    components: BTreeMap<&'static str, Level>,
}

/// The live log levels, changeable at run time (`POST /logging`). Cloning shares them.
#[derive(Clone)]
pub struct LogControl {
    levels: Arc<Mutex<Levels>>,
    apply: Arc<Option<Apply>>,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl")
            .field("directives", &self.directives())
            .finish()
    }
}

impl LogControl {
    /// Levels that are tracked but drive no subscriber (tests, or a process whose logging is set up
    /// elsewhere).
    pub fn detached(default: Level) -> Self {
        Self::with_apply(default, None)
    }

    fn with_apply(default: Level, apply: Option<Apply>) -> Self {
        let components = COMPONENTS
            .iter()
            .map(|(name, _)| (*name, default))
            .collect();
        Self {
            levels: Arc::new(Mutex::new(Levels {
                default,
                components,
            })),
            apply: Arc::new(apply),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Levels> {
        // The lock guards plain data that every writer leaves consistent.
        self.levels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets every component (Envoy's `/logging?level=`).
    pub fn set_level(&self, level: Level) -> Result<(), LoggingError> {
        {
            let mut l = self.lock();
            l.default = level;
            l.components.values_mut().for_each(|v| *v = level);
        }
        self.reload()
    }

    /// Sets one component (`/logging?upstream=debug`); an unknown name is an error, as in Envoy.
    pub fn set_component(&self, name: &str, level: Level) -> Result<(), LoggingError> {
        self.set_components(&[(name.to_string(), level)])
    }

    /// Sets several components at once, all or none.
    pub fn set_components(&self, pairs: &[(String, Level)]) -> Result<(), LoggingError> {
        {
            let mut l = self.lock();
            if let Some((bad, _)) = pairs
                .iter()
                .find(|(n, _)| !l.components.contains_key(n.as_str()))
            {
                return Err(LoggingError::UnknownLogger(bad.clone()));
            }
            for (name, level) in pairs {
                if let Some(v) = l.components.get_mut(name.as_str()) {
                    *v = *level;
                }
            }
        }
        self.reload()
    }

    /// The level of one component, if it is known.
    pub fn component_level(&self, name: &str) -> Option<Level> {
        self.lock().components.get(name).copied()
    }

    /// Envoy's listing: `active loggers:\n  admin: info\n...`.
    pub fn active_loggers(&self) -> String {
        let l = self.lock();
        let mut out = String::from("active loggers:\n");
        for (name, level) in &l.components {
            let _ = writeln!(out, "  {name}: {}", level.as_str());
        }
        out
    }

    /// The `EnvFilter` directives the current levels make.
    pub fn directives(&self) -> String {
        let l = self.lock();
        let others = l.default.max(Level::Warning);
        let mut targets: BTreeMap<&str, Level> = BTreeMap::new();
        for (name, level) in &l.components {
            let Some((_, mapped)) = COMPONENTS.iter().find(|(n, _)| n == name) else {
                continue;
            };
            for target in mapped.iter() {
                // A target serves several components; it logs what the most verbose of them asks.
                let entry = targets.entry(target).or_insert(*level);
                *entry = (*entry).min(*level);
            }
        }
        let mut parts = vec![others.filter().to_string()];
        parts.extend(
            OWN_CRATES
                .iter()
                .map(|c| format!("{c}={}", l.default.filter())),
        );
        parts.extend(
            targets
                .into_iter()
                .filter(|(t, level)| *level != l.default || !t.starts_with("remora"))
                .map(|(t, level)| format!("{t}={}", level.filter())),
        );
        parts.join(",")
    }

    fn reload(&self) -> Result<(), LoggingError> {
        match self.apply.as_ref() {
            Some(apply) => apply(build_filter(&self.directives())?).map_err(LoggingError::Reload),
            None => Ok(()),
        }
    }
}

fn build_filter(directives: &str) -> Result<EnvFilter, LoggingError> {
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| LoggingError::Reload(e.to_string()))
}

/// `(component, level)` pairs remora knows, and the names it does not.
pub type ComponentLevels = (Vec<(String, Level)>, Vec<String>);

/// Parses `--component-log-level` (`upstream:debug,connection:trace`). Components remora does not know
/// are returned separately so the caller can warn about them once logging works.
pub fn parse_component_levels(spec: &str) -> Result<ComponentLevels, LoggingError> {
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, level) = item
            .split_once(':')
            .ok_or_else(|| LoggingError::InvalidComponentLevel(item.to_string()))?;
        let level = Level::parse(level)?;
        if COMPONENTS.iter().any(|(n, _)| *n == name) {
            known.push((name.to_string(), level));
        } else {
            unknown.push(name.to_string());
        }
    }
    Ok((known, unknown))
}

/// What the command line says about logging.
#[derive(Debug, Clone, Default)]
pub struct LoggingOptions<'a> {
    pub level: &'a str,
    pub component_log_level: Option<&'a str>,
    pub log_path: Option<&'a Path>,
}

/// Installs the global subscriber. Fails if the flags are invalid or a subscriber is already installed.
pub fn init(opts: &LoggingOptions<'_>) -> Result<LogControl, LoggingError> {
    let default = Level::parse(if opts.level.is_empty() {
        "info"
    } else {
        opts.level
    })?;
    let (components, unknown) = match opts.component_log_level {
        Some(spec) => parse_component_levels(spec)?,
        None => (Vec::new(), Vec::new()),
    };
    let (writer, ansi) = match opts.log_path {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| LoggingError::OpenLogPath {
                    path: path.to_path_buf(),
                    source,
                })?;
            (BoxMakeWriter::new(Arc::new(file)), false)
        }
        None => {
            use std::io::IsTerminal;
            (
                BoxMakeWriter::new(std::io::stderr),
                std::io::stderr().is_terminal(),
            )
        }
    };

    let detached = LogControl::detached(default);
    detached.set_components(&components)?;
    let (filter, handle) = reload::Layer::new(build_filter(&detached.directives())?);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(ansi),
        )
        .try_init()
        .map_err(|_| LoggingError::AlreadyInitialized)?;

    let apply: Apply = Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()));
    let control = LogControl {
        levels: detached.levels,
        apply: Arc::new(Some(apply)),
    };
    for name in unknown {
        tracing::warn!(component = %name, "unknown log component ignored");
    }
    Ok(control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_level_names() {
        assert_eq!(Level::parse("warning").expect("level"), Level::Warning);
        assert_eq!(Level::parse("warn").expect("level"), Level::Warning);
        assert_eq!(
            Level::parse("critical").expect("level").filter(),
            LevelFilter::ERROR
        );
        assert_eq!(
            Level::parse("off").expect("level").filter(),
            LevelFilter::OFF
        );
        assert!(matches!(
            Level::parse("loud"),
            Err(LoggingError::UnknownLevel(_))
        ));
    }

    #[test]
    fn component_levels_become_target_directives() {
        let c = LogControl::detached(Level::Info);
        let (known, unknown) =
            parse_component_levels("upstream:debug,connection:trace,nonsense:debug").expect("spec");
        assert_eq!(unknown, vec!["nonsense".to_string()]);
        c.set_components(&known).expect("known components");
        let d = c.directives();
        assert!(d.starts_with("warn,remora=info,remora_proxy=info,"), "{d}");
        assert!(d.contains("remora_proxy::upstream=debug"), "{d}");
        assert!(d.contains("remora_proxy::listener=trace"), "{d}");
        assert!(!d.contains("remora_proxy::http="), "{d}");
        assert!(EnvFilter::builder().parse(&d).is_ok());
        assert!(matches!(
            parse_component_levels("upstream"),
            Err(LoggingError::InvalidComponentLevel(_))
        ));
    }

    #[test]
    fn most_verbose_component_wins_a_shared_target() {
        let c = LogControl::detached(Level::Info);
        c.set_component("http", Level::Debug).expect("http");
        c.set_component("router", Level::Trace).expect("router");
        assert!(c.directives().contains("remora_proxy::http=trace"));
    }

    #[test]
    fn set_level_resets_components_and_lists_them() {
        let c = LogControl::detached(Level::Info);
        c.set_component("upstream", Level::Trace).expect("upstream");
        c.set_level(Level::Debug).expect("level");
        let listing = c.active_loggers();
        assert!(
            listing.starts_with("active loggers:\n  admin: debug\n"),
            "{listing}"
        );
        assert!(listing.contains("  upstream: debug\n"));
        assert!(matches!(
            c.set_component("bogus", Level::Info),
            Err(LoggingError::UnknownLogger(_))
        ));
        // A failed batch changes nothing.
        let batch = [
            ("http".to_string(), Level::Error),
            ("bogus".to_string(), Level::Error),
        ];
        assert!(c.set_components(&batch).is_err());
        assert_eq!(c.component_level("http"), Some(Level::Debug));
    }

    #[test]
    fn trace_opens_other_crates_only_to_warn_but_error_quiets_them() {
        assert!(LogControl::detached(Level::Trace)
            .directives()
            .starts_with("warn,"));
        assert!(LogControl::detached(Level::Error)
            .directives()
            .starts_with("error,"));
        assert!(LogControl::detached(Level::Off)
            .directives()
            .starts_with("off,"));
    }
}
