//! Access log formats: a format string (or JSON structure) parsed once into tokens, rendered per stream.

mod operator;
#[cfg(test)]
mod tests;
pub mod time;

use std::fmt::Write as _;

use envoy_types::pb::google::protobuf as pbjson;
use envoy_types::pb::google::protobuf::value::Kind;

pub use operator::{AddrPart, Operator, TlsField, TlsSide, Value};

use super::context::LogContext;

/// Envoy's format when none is configured.
pub const DEFAULT_FORMAT: &str =
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% \
%PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% \
%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \
\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Literal(String),
    /// An operator and its `:N` length limit.
    Op(Operator, Option<usize>),
}

/// Parses a format string. Errors name the problem; the caller adds the config path.
pub fn parse(format: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut lit = String::new();
    let mut rest = format;
    while let Some(pos) = rest.find('%') {
        lit.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('%') {
            lit.push('%');
            rest = tail;
            continue;
        }
        let at = format.len() - rest.len() + pos;
        let (token, tail) = parse_command(after)
            .ok_or_else(|| format!("invalid command operator at position {at} of {format:?}"))??;
        if !lit.is_empty() {
            tokens.push(Token::Literal(std::mem::take(&mut lit)));
        }
        tokens.push(token);
        rest = tail;
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        tokens.push(Token::Literal(lit));
    }
    Ok(tokens)
}

/// `NAME[(ARG)][:N]%...` → the token and what follows it. `None` when this is no command at all.
fn parse_command(s: &str) -> Option<Result<(Token, &str), String>> {
    let name_len = s
        .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .unwrap_or(s.len());
    if name_len == 0 {
        return None;
    }
    let name = &s[..name_len];
    let mut rest = &s[name_len..];
    let mut arg = None;
    if let Some(inner) = rest.strip_prefix('(') {
        // The argument ends at the `)` that is followed by `%` or `:N%` (START_TIME formats hold `%`).
        let close = inner.char_indices().find_map(|(i, c)| {
            let after = &inner[i + 1..];
            let ends = after.starts_with('%')
                || after.strip_prefix(':').is_some_and(|t| {
                    let d = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
                    d > 0 && t[d..].starts_with('%')
                });
            (c == ')' && ends).then_some(i)
        })?;
        arg = Some(&inner[..close]);
        rest = &inner[close + 1..];
    }
    let mut max_len = None;
    if let Some(t) = rest.strip_prefix(':') {
        let d = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        if d == 0 {
            return None;
        }
        max_len = t[..d].parse().ok();
        rest = &t[d..];
    }
    let rest = rest.strip_prefix('%')?;
    Some(Operator::parse(name, arg).map(|op| (Token::Op(op, max_len), rest)))
}

fn truncate(s: &str, max: Option<usize>) -> &str {
    match max {
        Some(n) if s.len() > n => {
            let mut end = n;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            &s[..end]
        }
        _ => s,
    }
}

/// Appends the tokens' text; missing values print `-`, or nothing with `omit_empty_values`.
pub fn render_text(tokens: &[Token], ctx: &LogContext<'_>, omit_empty: bool, out: &mut String) {
    for token in tokens {
        match token {
            Token::Literal(l) => out.push_str(l),
            Token::Op(op, max) => match op.value(ctx) {
                Value::Missing => {
                    if !omit_empty {
                        out.push('-');
                    }
                }
                Value::Empty => {}
                Value::Str(s) => out.push_str(truncate(&s, *max)),
                Value::Num(n) => {
                    let _ = write!(out, "{n}");
                }
            },
        }
    }
}

/// A `json_format` structure, keys sorted as Envoy prints them.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonNode {
    Object(Vec<(String, JsonNode)>),
    List(Vec<JsonNode>),
    /// A string holding operators.
    Format(Vec<Token>),
    /// A number, bool or null from the configuration.
    Literal(serde_json::Value),
}

/// Compiles a `json_format` Struct; errors carry the key path inside it.
pub fn compile_json(s: &pbjson::Struct) -> Result<JsonNode, (String, String)> {
    let mut keys: Vec<&String> = s.fields.keys().collect();
    keys.sort();
    let mut entries = Vec::with_capacity(keys.len());
    for key in keys {
        let node = compile_value(&s.fields[key]).map_err(|(p, e)| (join(key, &p), e))?;
        entries.push((key.clone(), node));
    }
    Ok(JsonNode::Object(entries))
}

fn join(key: &str, path: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else if path.starts_with('[') {
        format!("{key}{path}")
    } else {
        format!("{key}.{path}")
    }
}

fn compile_value(v: &pbjson::Value) -> Result<JsonNode, (String, String)> {
    Ok(match &v.kind {
        Some(Kind::StringValue(s)) => JsonNode::Format(parse(s).map_err(|e| (String::new(), e))?),
        Some(Kind::StructValue(s)) => compile_json(s)?,
        Some(Kind::ListValue(l)) => JsonNode::List(
            l.values
                .iter()
                .enumerate()
                .map(|(i, v)| compile_value(v).map_err(|(p, e)| (join(&format!("[{i}]"), &p), e)))
                .collect::<Result<_, _>>()?,
        ),
        Some(Kind::NumberValue(n)) => JsonNode::Literal(serde_json::Number::from_f64(*n).map_or(
            serde_json::Value::Null,
            |n| {
                // Whole numbers print without a fraction, as protobuf's JSON does.
                if n.as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                {
                    serde_json::Value::from(n.as_f64().unwrap_or_default() as i64)
                } else {
                    serde_json::Value::Number(n)
                }
            },
        )),
        Some(Kind::BoolValue(b)) => JsonNode::Literal(serde_json::Value::Bool(*b)),
        Some(Kind::NullValue(_)) | None => JsonNode::Literal(serde_json::Value::Null),
    })
}

fn push_json_str(s: &str, out: &mut String) {
    // Serialising a str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

/// Appends the node as compact JSON. Returns false (and appends nothing) when the node is left out
/// under `omit_empty_values`.
pub fn render_json(
    node: &JsonNode,
    ctx: &LogContext<'_>,
    omit_empty: bool,
    out: &mut String,
) -> bool {
    match node {
        JsonNode::Object(entries) => {
            let start = out.len();
            out.push('{');
            let mut any = false;
            for (key, value) in entries {
                let mark = out.len();
                if any {
                    out.push(',');
                }
                push_json_str(key, out);
                out.push(':');
                if render_json(value, ctx, omit_empty, out) {
                    any = true;
                } else {
                    out.truncate(mark);
                }
            }
            out.push('}');
            if omit_empty && !any {
                out.truncate(start);
                return false;
            }
            true
        }
        JsonNode::List(items) => {
            out.push('[');
            let mut first = true;
            for item in items {
                let mark = out.len();
                if !first {
                    out.push(',');
                }
                if render_json(item, ctx, omit_empty, out) {
                    first = false;
                } else {
                    out.truncate(mark);
                }
            }
            out.push(']');
            true
        }
        JsonNode::Literal(v) => {
            out.push_str(&v.to_string());
            true
        }
        JsonNode::Format(tokens) => match tokens.as_slice() {
            // A lone operator keeps its type: numbers stay numbers, missing is null.
            [Token::Op(op, max)] => match op.value(ctx) {
                Value::Missing | Value::Empty if omit_empty => false,
                Value::Missing | Value::Empty => {
                    out.push_str("null");
                    true
                }
                Value::Num(n) => {
                    let _ = write!(out, "{n}");
                    true
                }
                Value::Str(s) => {
                    push_json_str(truncate(&s, *max), out);
                    true
                }
            },
            _ => {
                let mut text = String::new();
                render_text(tokens, ctx, omit_empty, &mut text);
                if omit_empty && text.is_empty() {
                    return false;
                }
                push_json_str(&text, out);
                true
            }
        },
    }
}
