//! The routing plan: what the gateway does with a request for the host, made from one push of
//! istiod and nothing else. Pure (no I/O), so that a plan can be compared with the one nginx runs,
//! printed as the `applied` line, and tested without nginx or istiod.

use std::collections::BTreeMap;
use std::fmt;

use crate::push::{Push, PushedHeader, PushedHeaderMatch, PushedHost, PushedMatch, PushedRoute};
use crate::upstream::Upstream;

/// The weight each key gets, by key; the keys are exactly the `--upstream` ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Split {
    pub(crate) weights: BTreeMap<String, u32>,
    /// The weight of destinations with no `--upstream`. Istio answers their share with 503 (no
    /// healthy upstream); so does the gateway, rather than hand it to the other keys.
    pub(crate) unrouted: u32,
}

/// `v1=75 v2=25` (the `applied` line), with ` unrouted=N` only when some weight goes nowhere.
impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (subset, weight) in &self.weights {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{subset}={weight}")?;
        }
        if self.unrouted > 0 {
            write!(f, " unrouted={}", self.unrouted)?;
        }
        Ok(())
    }
}

impl Split {
    /// Every key at 0: what a gateway does with no route (it answers 503 here).
    fn nothing(upstreams: &[Upstream]) -> Split {
        Split {
            weights: upstreams.iter().map(|u| (u.subset.clone(), 0)).collect(),
            unrouted: 0,
        }
    }

    /// A match route's destination in the `applied` line: the one key that gets everything, else
    /// the split, comma-separated so that the line stays one word per route.
    fn destination(&self) -> String {
        let mut given = self.weights.iter().filter(|(_, w)| **w > 0);
        match (given.next(), given.next()) {
            (Some((key, _)), None) if self.unrouted == 0 => key.clone(),
            (None, None) if self.unrouted > 0 => "unrouted".to_owned(),
            _ => self.to_string().replace(' ', ","),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.unrouted == 0 && self.weights.values().all(|w| *w == 0)
    }
}

/// The nginx variable holding the request's path without its query, which Envoy's path
/// conditions test (`$uri` would be decoded and normalised by nginx).
pub(crate) const PATH_VARIABLE: &str = "$standin_path";

/// One condition of a route, as nginx tests it: a variable's value against a PCRE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Condition {
    /// `$http_cookie`, `$request_method`, [`PATH_VARIABLE`], ...
    pub(crate) source: String,
    /// Anchored where Envoy's matcher is (a regex matches the whole value).
    pub(crate) regex: String,
    /// The condition holds when the regex does not match (Envoy's `invert_match`).
    pub(crate) invert: bool,
    /// For a header: the outcome when it is absent, which Envoy decides without testing the value
    /// (a missing header matches no value matcher, inverted or not). `None`: an absent header is
    /// tested as the empty value (`treat_missing_header_as_empty`), as a path always is.
    pub(crate) absent: Option<bool>,
}

/// `$http_cookie ~ ^(?:...)\z`, `!~` when inverted, and what an absent header gives: the form the
/// unit tests compare.
impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.invert { "!~" } else { "~" };
        write!(f, "{} {op} {}", self.source, self.regex)?;
        match self.absent {
            Some(true) => f.write_str(" (absent: holds)"),
            Some(false) => f.write_str(" (absent: fails)"),
            None => Ok(()),
        }
    }
}

/// `text` as a PCRE matching exactly it: every ASCII punctuation character escaped, which PCRE
/// reads as that character whatever it is.
fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if c.is_ascii_punctuation() || c == ' ' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The nginx variable holding request header `name`, Envoy's pseudo-headers included.
fn header_variable(name: &str) -> Result<String, String> {
    let name = name.to_ascii_lowercase();
    let variable = match name.as_str() {
        ":authority" => "$http_host".to_owned(),
        ":method" => "$request_method".to_owned(),
        ":path" => "$request_uri".to_owned(),
        ":scheme" => "$scheme".to_owned(),
        _ if !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            format!("$http_{}", name.replace('-', "_"))
        }
        _ => return Err(format!("header {name:?}, which nginx has no variable for")),
    };
    Ok(variable)
}

impl Condition {
    /// Envoy's header matcher as nginx tests it.
    fn of_header(h: &PushedHeaderMatch) -> Result<Condition, String> {
        let source = header_variable(&h.name)?;
        if let Some(other) = &h.other {
            return Err(format!("header {} matched by {other}", h.name));
        }
        let case = if h.ignore_case { "(?i)" } else { "" };
        let value = match (&h.exact, &h.regex, &h.prefix, &h.suffix, &h.contains) {
            (Some(exact), ..) => Some(format!("^{case}{}\\z", literal(exact))),
            (_, Some(regex), ..) => Some(format!("^{case}(?:{regex})\\z")),
            (_, _, Some(prefix), ..) => Some(format!("^{case}{}", literal(prefix))),
            (_, _, _, Some(suffix), _) => Some(format!("{case}{}\\z", literal(suffix))),
            (.., Some(contains)) => Some(format!("{case}{}", literal(contains))),
            _ => None,
        };
        Ok(match (value, h.present) {
            (Some(regex), _) => Condition {
                source,
                regex,
                invert: h.invert,
                absent: (!h.treat_missing_as_empty).then_some(false),
            },
            // Present (or, with `false`, absent): the regex matches any value; what decides is
            // whether there is one.
            (None, Some(present)) => Condition {
                source,
                regex: "^".to_owned(),
                invert: present == h.invert,
                absent: Some(!present ^ h.invert),
            },
            (None, None) => return Err(format!("header {} with no matcher", h.name)),
        })
    }

    /// The path conditions of a route and then its header conditions, all of which must hold;
    /// `Err`: something Envoy tests that the stand-in cannot.
    fn of_match(m: &PushedMatch) -> Result<Vec<Condition>, String> {
        if !m.other.is_empty() {
            return Err(m.other.join("; "));
        }
        let case = if m.case_sensitive == Some(false) {
            "(?i)"
        } else {
            ""
        };
        let path = |regex: String| Condition {
            source: PATH_VARIABLE.to_owned(),
            regex,
            invert: false,
            absent: None,
        };
        let mut conditions = Vec::new();
        match (&m.prefix, &m.path, &m.regex, &m.path_separated_prefix) {
            // Every path starts with "/": no condition at all.
            (Some(prefix), ..) if prefix.is_empty() || prefix == "/" => {}
            (Some(prefix), ..) => conditions.push(path(format!("^{case}{}", literal(prefix)))),
            (_, Some(exact), ..) => conditions.push(path(format!("^{case}{}\\z", literal(exact)))),
            (_, _, Some(regex), _) => conditions.push(path(format!("^{case}(?:{regex})\\z"))),
            (.., Some(prefix)) => {
                conditions.push(path(format!("^{case}{}(?:/|\\z)", literal(prefix))));
            }
            _ => {}
        }
        for h in &m.headers {
            conditions.push(Condition::of_header(h)?);
        }
        Ok(conditions)
    }
}

/// Where a route sends what it takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Split(Split),
    /// Answered by the gateway itself with this status.
    Status(u32),
}

/// Response headers to add, name and value, in order.
pub(crate) type Headers = Vec<(String, String)>;

/// One route of the virtual host, as nginx follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    /// All must hold; none for the route that takes the rest.
    pub(crate) conditions: Vec<Condition>,
    pub(crate) target: Target,
    /// Added to every answer the route gives, before the answering key's own.
    pub(crate) headers: Headers,
    /// Added to the answers of one key of a weighted route (Istio's per-destination headers).
    pub(crate) key_headers: BTreeMap<String, Headers>,
}

/// What the gateway does with a request for the host: the virtual host's routes in Envoy's order,
/// up to the first without conditions (no request reaches a route after it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) routes: Vec<Route>,
    /// The status of a request no route takes.
    pub(crate) unmatched: u32,
    /// Every key at 0, for the `applied` line when no route takes the rest.
    nothing: Split,
}

/// The `applied` line, but `applied`; the module documentation describes it.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.routes.last().filter(|r| r.conditions.is_empty()) {
            Some(Route {
                target: Target::Split(split),
                ..
            }) => write!(f, "{split}")?,
            Some(Route {
                target: Target::Status(status),
                ..
            }) => write!(f, "{} status={status}", self.nothing)?,
            None => write!(f, "{}", self.nothing)?,
        }
        for route in self.routes.iter().filter(|r| !r.conditions.is_empty()) {
            match &route.target {
                Target::Split(split) => write!(f, " match:{}", split.destination())?,
                Target::Status(status) => write!(f, " match:{status}")?,
            }
        }
        Ok(())
    }
}

/// The Service (or Services) whose clusters the `--upstream` keys stand for.
#[derive(Clone, Debug)]
pub(crate) struct Release {
    pub(crate) name: String,
    pub(crate) namespace: String,
}

impl Release {
    /// The `--upstream` key a cluster stands for: subset KEY of the release's Service, or the
    /// release's Service `<name>-KEY` (one Service per version, as Gateway API backendRefs name
    /// them).
    fn key_of<'a>(&self, cluster: &'a str) -> Option<&'a str> {
        let mut parts = cluster.split('|');
        let (Some("outbound"), Some(_port), Some(subset), Some(fqdn), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let service = fqdn.strip_suffix(&format!(".{}.svc.cluster.local", self.namespace))?;
        if subset.is_empty() {
            service
                .strip_prefix(self.name.as_str())?
                .strip_prefix('-')
                .filter(|key| !key.is_empty())
        } else {
            (service == self.name).then_some(subset)
        }
    }
}

/// A response header to add, if nginx can: a valid name and a value without control characters.
/// Envoy appends or sets; nginx appends (the backend's header of the same name stays), so
/// anything else is warned about.
fn header_of(
    h: &PushedHeader,
    whose: &str,
    warnings: &mut Vec<String>,
) -> Option<(String, String)> {
    let name_ok = !h.name.is_empty()
        && h.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !name_ok || h.value.chars().any(char::is_control) {
        warnings.push(format!(
            "WARNING: {whose} adds response header {:?}: {:?}, which nginx cannot send: left out",
            h.name, h.value
        ));
        return None;
    }
    if !h.append_action.is_empty() && h.append_action != "APPEND_IF_EXISTS_OR_ADD" {
        warnings.push(format!(
            "WARNING: {whose} adds response header {} with {}; the stand-in appends it (a header \
             of that name from the backend is kept)",
            h.name, h.append_action
        ));
    }
    Some((h.name.clone(), h.value.clone()))
}

impl Plan {
    /// Nothing routed: every request answered 503 (no route known yet, or none for the host).
    pub(crate) fn nothing(upstreams: &[Upstream]) -> Plan {
        Plan {
            routes: Vec::new(),
            unmatched: 503,
            nothing: Split::nothing(upstreams),
        }
    }

    /// The routes of the virtual host serving `host` in istiod's push, with their clusters mapped
    /// to the `--upstream` keys of `release`; weight to any other cluster is unrouted. Also what
    /// of the push the stand-in cannot follow.
    pub(crate) fn of_push(
        push: &Push,
        host: &str,
        release: &Release,
        upstreams: &[Upstream],
    ) -> (Plan, Vec<String>) {
        let mut plan = Plan::nothing(upstreams);
        let mut warnings = Vec::new();
        // Envoy prefers a domain naming the host (with any port) to the catch-all.
        let names = |v: &&PushedHost| {
            v.domains
                .iter()
                .any(|d| d == host || d.strip_suffix(":*") == Some(host))
        };
        let any = |v: &&PushedHost| v.domains.iter().any(|d| d == "*");
        let vhost = push
            .virtual_hosts
            .iter()
            .find(names)
            .or_else(|| push.virtual_hosts.iter().find(any));
        let Some(vhost) = vhost.filter(|v| !v.routes.is_empty()) else {
            warnings.push(format!(
                "istiod gives the gateway no route for host {host}: nothing is routed"
            ));
            return (plan, warnings);
        };
        // Envoy answers 404 when no route of the virtual host matches.
        plan.unmatched = 404;
        for (i, pushed) in vhost.routes.iter().enumerate() {
            let whose = if pushed.name.is_empty() {
                format!("route #{i}")
            } else {
                format!("route {} (#{i})", pushed.name)
            };
            let conditions = match Condition::of_match(&pushed.conditions) {
                Ok(conditions) => conditions,
                Err(why) => {
                    warnings.push(format!(
                        "WARNING: {whose} has conditions the stand-in cannot test ({why}); it is \
                         left out, so requests Envoy would route by it go by the routes after it"
                    ));
                    continue;
                }
            };
            let route = Route::of_push(
                pushed,
                conditions,
                &whose,
                release,
                upstreams,
                &mut warnings,
            );
            let takes_the_rest = route.conditions.is_empty();
            plan.routes.push(route);
            if takes_the_rest {
                break;
            }
        }
        (plan, warnings)
    }
}

impl Route {
    fn of_push(
        pushed: &PushedRoute,
        conditions: Vec<Condition>,
        whose: &str,
        release: &Release,
        upstreams: &[Upstream],
        warnings: &mut Vec<String>,
    ) -> Route {
        let mut route = Route {
            conditions,
            target: Target::Status(503),
            headers: Vec::new(),
            key_headers: BTreeMap::new(),
        };
        if pushed.redirect {
            warnings.push(format!(
                "WARNING: {whose} answers with a redirect, which the stand-in does not make: \
                 answered 503"
            ));
            return route;
        }
        let headers = |h: &[PushedHeader], removed: &[String], whose: &str, w: &mut Vec<String>| {
            if !removed.is_empty() {
                w.push(format!(
                    "WARNING: {whose} removes response headers {removed:?}; the stand-in keeps them"
                ));
            }
            h.iter()
                .filter_map(|h| header_of(h, whose, w))
                .collect::<Vec<_>>()
        };
        route.headers = headers(
            &pushed.response_headers_to_add,
            &pushed.response_headers_to_remove,
            whose,
            warnings,
        );
        if pushed.direct_response > 0 {
            route.target = Target::Status(pushed.direct_response);
            return route;
        }
        if pushed.clusters.is_empty() {
            warnings.push(format!(
                "WARNING: {whose} names no cluster and no direct response: answered 503"
            ));
            return route;
        }
        let mut split = Split::nothing(upstreams);
        for cluster in &pushed.clusters {
            let key = release
                .key_of(&cluster.name)
                .filter(|k| split.weights.contains_key(*k));
            match key.and_then(|k| Some((k, split.weights.get_mut(k)?))) {
                Some((key, total)) => {
                    *total = total.saturating_add(cluster.weight);
                    let whose = format!("cluster {} of {whose}", cluster.name);
                    let added = headers(
                        &cluster.response_headers_to_add,
                        &cluster.response_headers_to_remove,
                        &whose,
                        warnings,
                    );
                    if !added.is_empty() {
                        route
                            .key_headers
                            .entry(key.to_owned())
                            .or_default()
                            .extend(added);
                    }
                }
                None => {
                    warnings.push(format!(
                        "{whose} sends weight {} to cluster {}, which has no --upstream: that \
                         share is answered 503",
                        cluster.weight, cluster.name
                    ));
                    split.unrouted = split.unrouted.saturating_add(cluster.weight);
                }
            }
        }
        route.target = Target::Split(split);
        route
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The plans of pushes as istiod sends them; the nginx configuration's tests route the same
    //! plans, hence the helpers they share.

    use super::*;
    use crate::upstream::parse_upstream;
    use serde_json::json;

    fn push(json: serde_json::Value) -> Push {
        serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"))
    }

    pub(crate) fn upstreams() -> Vec<Upstream> {
        ["v1=127.0.0.1:1", "v2=127.0.0.1:2"]
            .iter()
            .map(|u| parse_upstream(u).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    /// What the gateway would do with a request for the host, as istiod's push says.
    #[test]
    fn the_split_is_read_from_the_pushed_route_of_the_host() {
        let fqdn = "chat.ns.svc.cluster.local";
        let cluster = |subset: &str, weight: u32| json!({"name": format!("outbound|5000|{subset}|{fqdn}"), "weight": weight});
        let vhost = |domains: &[&str], clusters: Vec<serde_json::Value>| json!({"domains": domains, "routes": [{"clusters": clusters}]});
        let table = [
            // The host's own virtual host, before a catch-all of another release.
            (
                vec![
                    vhost(
                        &["*"],
                        vec![
                            json!({"name": "outbound|80||other.x.svc.cluster.local", "weight": 100}),
                        ],
                    ),
                    vhost(
                        &["chat.test", "chat.test:*"],
                        vec![cluster("v1", 75), cluster("v2", 25)],
                    ),
                ],
                "v1=75 v2=25",
            ),
            // istiod leaves a subset at 0 out.
            (
                vec![vhost(&["chat.test"], vec![cluster("v2", 100)])],
                "v1=0 v2=100",
            ),
            // A subset with no address, or another service's cluster: answered 503.
            (
                vec![vhost(
                    &["chat.test"],
                    vec![cluster("v1", 75), cluster("v3", 25)],
                )],
                "v1=75 v2=0 unrouted=25",
            ),
            // Only a catch-all: it serves the host.
            (vec![vhost(&["*"], vec![cluster("v1", 100)])], "v1=100 v2=0"),
            // No virtual host for the host: nothing is routed.
            (
                vec![vhost(&["other.test"], vec![cluster("v1", 100)])],
                "v1=0 v2=0",
            ),
        ];
        for (hosts, expected) in table {
            let push = push(json!({"virtualHosts": hosts}));
            let (plan, _) = Plan::of_push(&push, "chat.test", &release(), &upstreams());
            assert_eq!(plan.to_string(), expected);
        }
    }

    fn release() -> Release {
        Release {
            name: "chat".to_owned(),
            namespace: "ns".to_owned(),
        }
    }

    /// A cluster of the release's Service, subset `subset`, as istiod names it.
    fn subset(subset: &str, weight: u32) -> serde_json::Value {
        json!({"name": format!("outbound|5000|{subset}|chat.ns.svc.cluster.local"), "weight": weight})
    }

    /// The sticky cookie the operator adds to the answers of one version.
    fn cookie(version: &str) -> serde_json::Value {
        json!([{"name": "set-cookie", "value": format!("canary-model={version}; Path=/; Max-Age=86400"),
                "appendAction": "APPEND_IF_EXISTS_OR_ADD"}])
    }

    /// A route taken when the request's cookie names `version`, as istiod pushes it.
    pub(crate) fn sticky(version: &str) -> serde_json::Value {
        json!({"name": format!("sticky-{version}"), "clusters": [subset(version, 100)],
               "match": {"prefix": "/", "headers": [
                   {"name": "cookie", "regex": format!(r"^(.*;\s*)?canary-model={version}(;.*)?$")}]}})
    }

    /// The weighted route that takes the rest, each version's answers setting its cookie.
    pub(crate) fn split(v1: u32, v2: u32) -> serde_json::Value {
        let mut clusters = Vec::new();
        for (version, weight) in [("v1", v1), ("v2", v2)] {
            if weight > 0 {
                let mut cluster = subset(version, weight);
                cluster["responseHeadersToAdd"] = cookie(version);
                clusters.push(cluster);
            }
        }
        json!({"name": "split", "clusters": clusters, "match": {"prefix": "/"}})
    }

    pub(crate) fn plan_of(routes: serde_json::Value) -> (Plan, Vec<String>) {
        let push = push(json!({"virtualHosts": [{"domains": ["chat.test"], "routes": routes}]}));
        Plan::of_push(&push, "chat.test", &release(), &upstreams())
    }

    /// Envoy's order: the first route whose conditions hold, routes after the first without any
    /// never reached; the `applied` line shows the rest's split, then each match route.
    #[test]
    fn routes_are_followed_in_order_up_to_the_one_that_takes_the_rest() {
        let header = |name: &str, matcher: serde_json::Value| {
            let mut m = matcher;
            m["name"] = json!(name);
            json!({"clusters": [subset("v2", 100)], "match": {"prefix": "/", "headers": [m]}})
        };
        let table = [
            (
                "sticky cookie routes, then the split",
                json!([sticky("v2"), sticky("v1"), split(75, 25)]),
                "v1=75 v2=25 match:v2 match:v1",
                0,
            ),
            (
                "a version at 0 has no match route, nor a share",
                json!([sticky("v1"), split(100, 0)]),
                "v1=100 v2=0 match:v1",
                0,
            ),
            (
                "the header variant",
                json!([
                    header("x-canary-model", json!({"exact": "v2"})),
                    split(90, 10)
                ]),
                "v1=90 v2=10 match:v2",
                0,
            ),
            (
                "a weighted match route, a direct response, and one to no --upstream",
                json!([
                    {"clusters": [subset("v1", 50), subset("v2", 50)],
                     "match": {"path": "/both"}},
                    {"directResponse": 404, "clusters": [], "match": {"prefix": "/gone"}},
                    {"clusters": [subset("v3", 100)], "match": {"regex": "/v3/.*"}},
                    split(75, 25),
                ]),
                "v1=75 v2=25 match:v1=50,v2=50 match:404 match:unrouted",
                0,
            ),
            (
                "routes after the one that takes the rest are never reached",
                json!([split(75, 25), sticky("v2")]),
                "v1=75 v2=25",
                0,
            ),
            (
                "no route takes the rest: unmatched requests are answered 404",
                json!([sticky("v2")]),
                "v1=0 v2=0 match:v2",
                0,
            ),
            (
                "the rest answered by the gateway itself",
                json!([{"directResponse": 404, "clusters": [], "match": {"prefix": "/"}}]),
                "v1=0 v2=0 status=404",
                0,
            ),
            (
                "query parameters cannot be tested: the route is left out, loudly",
                json!([
                    {"clusters": [subset("v2", 100)],
                     "match": {"prefix": "/", "other": ["query_parameters [name:\"q\"]"]}},
                    split(75, 25),
                ]),
                "v1=75 v2=25",
                1,
            ),
            (
                "nor a range matcher",
                json!([
                    header("x-n", json!({"other": "range_match:{start:1 end:5}"})),
                    split(1, 1)
                ]),
                "v1=1 v2=1",
                1,
            ),
            (
                "a redirect is answered 503, loudly",
                json!([{"clusters": [], "redirect": true, "match": {"prefix": "/old"}}, split(75, 25)]),
                "v1=75 v2=25 match:503",
                1,
            ),
        ];
        for (what, routes, line, loud) in table {
            let (plan, warnings) = plan_of(routes);
            assert_eq!(plan.to_string(), line, "{what}");
            let warned = warnings.iter().filter(|w| w.starts_with("WARNING")).count();
            assert_eq!(warned, loud, "{what}: {warnings:?}");
            // Envoy's answer when no route of the host's virtual host matches.
            assert_eq!(plan.unmatched, 404, "{what}");
        }
    }

    /// Each of Envoy's header and path matchers as the nginx condition that tests it.
    #[test]
    fn conditions_are_tested_as_envoy_tests_them() {
        let table = [
            (
                json!({"headers": [{"name": "cookie", "regex": r"^(.*;\s*)?canary-model=v2(;.*)?$"}]}),
                vec![r"$http_cookie ~ ^(?:^(.*;\s*)?canary-model=v2(;.*)?$)\z (absent: fails)"],
            ),
            (
                json!({"headers": [{"name": "X-Canary-Model", "exact": "v2.1"}]}),
                vec![r"$http_x_canary_model ~ ^v2\.1\z (absent: fails)"],
            ),
            // Inverted: an absent header still fails (Envoy does not test a missing header) ...
            (
                json!({"headers": [{"name": "x-a", "prefix": "a b", "invert": true}]}),
                vec![r"$http_x_a !~ ^a\ b (absent: fails)"],
            ),
            // ... unless it is taken as empty, as Istio's withoutHeaders has it.
            (
                json!({"headers": [{"name": "x-a", "prefix": "a", "invert": true,
                                    "treatMissingAsEmpty": true}]}),
                vec![r"$http_x_a !~ ^a"],
            ),
            (
                json!({"headers": [{"name": "x-a", "suffix": "z", "ignoreCase": true},
                                   {"name": "x-b", "contains": "*"}]}),
                vec![
                    r"$http_x_a ~ (?i)z\z (absent: fails)",
                    r"$http_x_b ~ \* (absent: fails)",
                ],
            ),
            (
                json!({"headers": [{"name": "x-a", "present": true},
                                   {"name": "x-b", "present": false},
                                   {"name": "x-c", "present": true, "invert": true}]}),
                vec![
                    "$http_x_a ~ ^ (absent: fails)",
                    "$http_x_b !~ ^ (absent: holds)",
                    "$http_x_c !~ ^ (absent: holds)",
                ],
            ),
            (
                json!({"headers": [{"name": ":method", "exact": "POST"}]}),
                vec![r"$request_method ~ ^POST\z (absent: fails)"],
            ),
            (json!({"prefix": "/"}), vec![]),
            (json!({"prefix": "/api"}), vec![r"$standin_path ~ ^\/api"]),
            (json!({"path": "/chat"}), vec![r"$standin_path ~ ^\/chat\z"]),
            (
                json!({"regex": "/v[0-9]+/.*", "caseSensitive": false}),
                vec![r"$standin_path ~ ^(?i)(?:/v[0-9]+/.*)\z"],
            ),
            (
                json!({"pathSeparatedPrefix": "/api"}),
                vec![r"$standin_path ~ ^\/api(?:/|\z)"],
            ),
        ];
        for (matcher, expected) in table {
            let m: PushedMatch =
                serde_json::from_value(matcher.clone()).unwrap_or_else(|e| panic!("{e}"));
            let conditions = Condition::of_match(&m).unwrap_or_else(|e| panic!("{matcher}: {e}"));
            let shown: Vec<String> = conditions.iter().map(ToString::to_string).collect();
            assert_eq!(shown, expected, "{matcher}");
        }
        for unsupported in [
            json!({"headers": [{"name": "x-a", "other": "range_match:{}"}]}),
            json!({"headers": [{"name": ":protocol", "exact": "h2"}]}),
            json!({"headers": [{"name": "x a", "exact": "b"}]}),
            json!({"other": ["runtime_fraction {}"]}),
        ] {
            let m: PushedMatch =
                serde_json::from_value(unsupported.clone()).unwrap_or_else(|e| panic!("{e}"));
            assert!(Condition::of_match(&m).is_err(), "{unsupported}");
        }
    }

    /// A route's own response headers go with all its answers, a weighted cluster's with the
    /// answers of its key only; an action nginx cannot take is said out loud.
    #[test]
    fn response_headers_go_with_their_route_and_key() {
        let owned = |pairs: &[(&str, &str)]| -> Headers {
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect()
        };
        let mut sticky_v1 = sticky("v1");
        sticky_v1["responseHeadersToAdd"] = json!([{"name": "x-canary-model", "value": "v1", "appendAction": "APPEND_IF_EXISTS_OR_ADD"}]);
        let (plan, warnings) = plan_of(json!([sticky("v2"), sticky_v1, split(75, 25)]));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(plan.routes[0].headers.is_empty());
        assert_eq!(plan.routes[1].headers, owned(&[("x-canary-model", "v1")]));
        let rest = &plan.routes[2];
        assert!(rest.headers.is_empty());
        assert_eq!(
            rest.key_headers,
            BTreeMap::from([
                (
                    "v1".to_owned(),
                    owned(&[("set-cookie", "canary-model=v1; Path=/; Max-Age=86400")])
                ),
                (
                    "v2".to_owned(),
                    owned(&[("set-cookie", "canary-model=v2; Path=/; Max-Age=86400")])
                ),
            ])
        );

        let mut set = split(50, 50);
        set["responseHeadersToAdd"] = json!([{"name": "x-route", "value": "r", "appendAction": "OVERWRITE_IF_EXISTS_OR_ADD"}]);
        set["responseHeadersToRemove"] = json!(["server"]);
        let (plan, warnings) = plan_of(json!([set]));
        assert_eq!(plan.routes[0].headers, owned(&[("x-route", "r")]));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings.iter().all(|w| w.starts_with("WARNING")),
            "{warnings:?}"
        );
    }

    /// A subset of the release's Service, or the release's Service of one version (Gateway API).
    #[test]
    fn clusters_are_keys_by_subset_or_by_service() {
        let table = [
            ("outbound|5000|v1|chat.ns.svc.cluster.local", Some("v1")),
            ("outbound|5000||chat-v2.ns.svc.cluster.local", Some("v2")),
            ("outbound|5000|v1|chat-v1.ns.svc.cluster.local", None),
            ("outbound|5000||chat.ns.svc.cluster.local", None),
            ("outbound|5000||chat-.ns.svc.cluster.local", None),
            ("outbound|5000||chat-v1.other.svc.cluster.local", None),
            ("outbound|5000||chatty-v1.ns.svc.cluster.local", None),
            ("inbound|5000||chat-v1.ns.svc.cluster.local", None),
        ];
        for (cluster, key) in table {
            assert_eq!(release().key_of(cluster), key, "{cluster}");
        }
        // One Service per version, weighted by an HTTPRoute; v3 has no --upstream.
        let service = |name: &str, weight: u32| json!({"name": format!("outbound|5000||{name}.ns.svc.cluster.local"), "weight": weight});
        let (plan, _) = plan_of(json!([
            {"clusters": [service("chat-v1", 70), service("chat-v2", 20), service("chat-v3", 10)],
             "match": {"prefix": "/"}}
        ]));
        assert_eq!(plan.to_string(), "v1=70 v2=20 unrouted=10");
    }
}
