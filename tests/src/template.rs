//! Fixture templating: `{{name}}` placeholders replaced by ports and names.

use std::collections::BTreeMap;

/// Values for the placeholders of one fixture.
#[derive(Debug, Clone, Default)]
pub struct Vars(BTreeMap<String, String>);

impl Vars {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&mut self, name: &str, value: impl ToString) -> &mut Self {
        self.0.insert(name.to_string(), value.to_string());
        self
    }

    pub fn with(mut self, name: &str, value: impl ToString) -> Self {
        self.set(name, value);
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// Replace every `{{name}}` in `text`; panics naming the first placeholder without a value, so a
/// fixture typo fails loudly instead of reaching the proxy as a bad port.
pub fn render(text: &str, vars: &Vars) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").unwrap_or_else(|| {
            panic!(
                "unterminated placeholder in fixture near {:?}",
                &rest[start..]
            )
        });
        let name = after[..end].trim();
        let value = vars
            .get(name)
            .unwrap_or_else(|| panic!("fixture placeholder {{{{{name}}}}} has no value"));
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The placeholder names used in `text`, in order of first use.
pub fn placeholders(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let name = after[..end].trim().to_string();
        if !names.contains(&name) {
            names.push(name);
        }
        rest = &after[end + 2..];
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_lists_placeholders() {
        let text = "port: {{listener_port}}\nb: {{ backend_a }} {{listener_port}}";
        assert_eq!(placeholders(text), ["listener_port", "backend_a"]);
        let vars = Vars::new().with("listener_port", 1).with("backend_a", 2);
        assert_eq!(render(text, &vars), "port: 1\nb: 2 1");
    }

    #[test]
    #[should_panic(expected = "{{nope}} has no value")]
    fn missing_value_names_the_placeholder() {
        render("{{nope}}", &Vars::new());
    }
}
