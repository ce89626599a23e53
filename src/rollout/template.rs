//! Pure: the placeholders of a check's PromQL query. One query serves both versions (and any
//! release), so what differs between them is written as `{{name}}` and filled in here.

use std::time::Duration;

/// The placeholders a query may use, each with what it stands for (shown in `kubectl explain` and
/// in the message about an unknown one).
pub const PLACEHOLDERS: [(&str, &str); 5] = [
    ("namespace", "the release's namespace"),
    ("release", "the release's name"),
    (
        "version",
        "the version measured (canary.name, or stable.name for the comparison)",
    ),
    ("model", "that version's model"),
    (
        "interval",
        "the analysis interval as a PromQL duration, e.g. 60s",
    ),
];

/// What fills the placeholders for one version.
#[derive(Clone, Debug, PartialEq)]
pub struct Vars<'a> {
    pub namespace: &'a str,
    pub release: &'a str,
    pub version: &'a str,
    pub model: &'a str,
    pub interval: Duration,
}

/// Every `{{...}}` of `query` that is not a known placeholder, and a malformed `{{` without `}}`.
pub fn unknown(query: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let mut rest = query;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            bad.push(format!(
                "{{{{{}",
                after.chars().take(20).collect::<String>()
            ));
            break;
        };
        let name = after[..end].trim();
        if !PLACEHOLDERS.iter().any(|(known, _)| *known == name) {
            bad.push(format!("{{{{{}}}}}", &after[..end]));
        }
        rest = &after[end + 2..];
    }
    bad
}

/// The query with its placeholders filled. Values are escaped for a PromQL string literal, since
/// they are written inside label matchers' quotes (a model name may hold any character).
pub fn render(query: &str, vars: &Vars<'_>) -> String {
    let mut out = String::with_capacity(query.len() + 32);
    let mut rest = query;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        match after[..end].trim() {
            "namespace" => out.push_str(&escape(vars.namespace)),
            "release" => out.push_str(&escape(vars.release)),
            "version" => out.push_str(&escape(vars.version)),
            "model" => out.push_str(&escape(vars.model)),
            "interval" => out.push_str(&promql_duration(vars.interval)),
            _ => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A duration as PromQL writes it: whole seconds, or milliseconds when shorter than a second.
pub fn promql_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis().max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars<'static> {
        Vars {
            namespace: "lab",
            release: "chat",
            version: "v2",
            model: "gpt-\"4o\"",
            interval: Duration::from_secs(60),
        }
    }

    #[test]
    fn placeholders_are_filled() {
        let cases = [
            (
                r#"sum(rate(x{namespace="{{namespace}}",version="{{version}}"}[{{interval}}]))"#,
                r#"sum(rate(x{namespace="lab",version="v2"}[60s]))"#,
            ),
            (r#"m{release="{{ release }}"}"#, r#"m{release="chat"}"#),
            (r#"m{model="{{model}}"}"#, r#"m{model="gpt-\"4o\""}"#),
            ("no placeholders", "no placeholders"),
            ("{{unknown}} stays", "{{unknown}} stays"),
            ("unclosed {{version", "unclosed {{version"),
        ];
        for (query, rendered) in cases {
            assert_eq!(render(query, &vars()), rendered, "{query}");
        }
    }

    #[test]
    fn unknown_placeholders_are_named() {
        let cases: [(&str, &[&str]); 5] = [
            (
                "{{namespace}}{{version}}{{interval}}{{model}}{{release}}",
                &[],
            ),
            ("x{a=\"{{versoin}}\"}", &["{{versoin}}"]),
            (
                "{{pod}} and {{ namespace }} and {{job}}",
                &["{{pod}}", "{{job}}"],
            ),
            ("broken {{version", &["{{version"]),
            ("", &[]),
        ];
        for (query, expected) in cases {
            assert_eq!(unknown(query), expected, "{query}");
        }
    }

    #[test]
    fn intervals_read_as_promql_durations() {
        let cases = [
            (Duration::from_secs(60), "60s"),
            (Duration::from_secs(2), "2s"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_millis(500), "500ms"),
        ];
        for (d, text) in cases {
            assert_eq!(promql_duration(d), text);
        }
    }
}
