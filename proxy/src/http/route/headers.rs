//! Route header mutations: `*_headers_to_add` / `*_headers_to_remove` of one level (route
//! configuration, virtual host, route or weighted cluster), applied with Envoy's semantics.

use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValueOption,
};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::formatter::{FormatContext, Formatter, HeaderVars};
use crate::config::{ConfigErrors, Path};

#[derive(Debug, Clone)]
enum Template {
    Constant(HeaderValue),
    Dynamic(Formatter),
}

#[derive(Debug, Clone)]
struct HeaderAdd {
    name: HeaderName,
    value: Template,
    action: HeaderAppendAction,
    keep_empty: bool,
}

/// The header additions and removals of one configuration level, for one direction.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeaderMutations {
    remove: Vec<HeaderName>,
    add: Vec<HeaderAdd>,
}

impl HeaderMutations {
    /// Whether any value added at this level reads request headers (`%REQ(...)%`).
    pub(crate) fn reads_request_headers(&self) -> bool {
        self.add
            .iter()
            .any(|a| matches!(&a.value, Template::Dynamic(f) if f.reads_request_headers()))
    }

    /// `add_path` / `remove_path` name the two proto fields this level reads.
    pub(crate) fn from_proto(
        add: &[HeaderValueOption],
        remove: &[String],
        add_path: &Path,
        remove_path: &Path,
        errs: &mut ConfigErrors,
    ) -> Self {
        let mut out = HeaderMutations::default();
        for (i, name) in remove.iter().enumerate() {
            let path = remove_path.index(i);
            if let Some(n) = modifiable_name(name, &path, "removed", errs) {
                out.remove.push(n);
            }
        }
        for (i, opt) in add.iter().enumerate() {
            if let Some(a) = header_add(opt, &add_path.index(i), errs) {
                out.add.push(a);
            }
        }
        out
    }

    /// Removals first, then every value is expanded against the headers as they stand, then
    /// overwrites are applied before appends: Envoy's `HeaderParser::evaluateHeaders` order.
    /// `%REQ()%` reads the map being mutated on the request side and `vars.request_headers` on the
    /// response side, where `%RESP()%` reads the map being mutated.
    pub(crate) fn apply(
        &self,
        headers: &mut HeaderMap,
        vars: &HeaderVars<'_>,
        response_side: bool,
    ) {
        for name in &self.remove {
            headers.remove(name);
        }
        if self.add.is_empty() {
            return;
        }
        let mut planned: Vec<(&HeaderName, HeaderValue, bool)> = Vec::with_capacity(self.add.len());
        for a in &self.add {
            let value = match &a.value {
                Template::Constant(v) => v.clone(),
                Template::Dynamic(f) => {
                    let ctx = if response_side {
                        FormatContext {
                            vars,
                            request: vars.request_headers,
                            response: Some(&*headers),
                        }
                    } else {
                        FormatContext {
                            vars,
                            request: Some(&*headers),
                            response: None,
                        }
                    };
                    match HeaderValue::try_from(f.format(&ctx)) {
                        Ok(v) => v,
                        Err(_) => {
                            tracing::debug!(header = %a.name, "expanded header value is not a valid header value; skipped");
                            continue;
                        }
                    }
                }
            };
            if value.is_empty() && !a.keep_empty {
                continue;
            }
            let exists = headers.contains_key(&a.name);
            let overwrite = match a.action {
                HeaderAppendAction::AppendIfExistsOrAdd => false,
                HeaderAppendAction::AddIfAbsent if exists => continue,
                HeaderAppendAction::AddIfAbsent => false,
                HeaderAppendAction::OverwriteIfExists if !exists => continue,
                HeaderAppendAction::OverwriteIfExists
                | HeaderAppendAction::OverwriteIfExistsOrAdd => true,
            };
            planned.push((&a.name, value, overwrite));
        }
        for (name, value, overwrite) in &planned {
            if *overwrite {
                headers.insert(*name, value.clone());
            }
        }
        for (name, value, overwrite) in planned {
            if !overwrite {
                headers.append(name, value);
            }
        }
    }
}

/// Envoy refuses to add or remove pseudo-headers and `host` through these lists.
fn modifiable_name(
    name: &str,
    path: &Path,
    verb: &str,
    errs: &mut ConfigErrors,
) -> Option<HeaderName> {
    let lower = name.to_ascii_lowercase();
    if lower.is_empty() || lower.starts_with(':') || lower == "host" {
        errs.push(
            path,
            format!("':'-prefixed or host headers may not be {verb} ('{name}')"),
        );
        return None;
    }
    match HeaderName::from_bytes(lower.as_bytes()) {
        Ok(n) => Some(n),
        Err(_) => {
            errs.push(path, format!("invalid header name '{name}'"));
            None
        }
    }
}

fn header_add(opt: &HeaderValueOption, path: &Path, errs: &mut ConfigErrors) -> Option<HeaderAdd> {
    let Some(h) = &opt.header else {
        errs.push(path.field("header"), "is required");
        return None;
    };
    let name = modifiable_name(&h.key, &path.field("header").field("key"), "modified", errs)?;
    #[allow(deprecated)]
    let legacy_append = opt.append;
    let action = match (legacy_append, opt.append_action) {
        (Some(_), a) if a != HeaderAppendAction::AppendIfExistsOrAdd as i32 => {
            errs.push(path, "both append and append_action are set");
            return None;
        }
        (Some(b), _) if b.value => HeaderAppendAction::AppendIfExistsOrAdd,
        (Some(_), _) => HeaderAppendAction::OverwriteIfExistsOrAdd,
        (None, a) => match HeaderAppendAction::try_from(a) {
            Ok(a) => a,
            Err(_) => {
                errs.push(
                    path.field("append_action"),
                    format!("unknown append action {a}"),
                );
                return None;
            }
        },
    };
    let raw = if !h.value.is_empty() && !h.raw_value.is_empty() {
        errs.push(
            path.field("header"),
            "only one of value or raw_value may be set",
        );
        return None;
    } else if h.raw_value.is_empty() {
        h.value.clone()
    } else {
        match String::from_utf8(h.raw_value.clone()) {
            Ok(s) => s,
            Err(_) => {
                errs.push(
                    path.field("header").field("raw_value"),
                    "is not valid UTF-8",
                );
                return None;
            }
        }
    };
    let value_path = path.field("header").field("value");
    let f = match Formatter::parse(&raw) {
        Ok(f) => f,
        Err(e) => {
            errs.push(&value_path, e);
            return None;
        }
    };
    let value = match f.constant() {
        Some(c) => match HeaderValue::try_from(c) {
            Ok(v) => Template::Constant(v),
            Err(_) => {
                errs.push(&value_path, format!("invalid header value '{c}'"));
                return None;
            }
        },
        None => Template::Dynamic(f),
    };
    Some(HeaderAdd {
        name,
        value,
        action,
        keep_empty: opt.keep_empty_value,
    })
}
