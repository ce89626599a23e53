//! nginx's configuration for a plan: text only (no I/O), so that what nginx is given can be read
//! and tested without running it. Quoting lives here too: every name and value written into the
//! text goes through it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::plan::{Headers, PATH_VARIABLE, Plan, Target};
use crate::upstream::Upstream;

/// A path no application serves: it answers the generation of the configuration nginx runs, which
/// is how a reload is known to have taken effect (`nginx -s reload` only sends a signal).
pub(crate) const GENERATION_PATH: &str = "/.ingress-standin/generation";

/// What nginx is run with: its binary and its files.
pub(crate) struct Setup {
    pub(crate) binary: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) listen: SocketAddr,
    pub(crate) upstreams: Vec<Upstream>,
    /// Of the configuration last written; nginx answers it at [`GENERATION_PATH`].
    pub(crate) generation: u64,
}

/// nginx's configuration language: a path in double quotes, so spaces are fine.
fn quoted(path: &Path) -> Result<String, Error> {
    quoted_prefixed("", path)
}

/// [`quoted`], with `prefix` (such as `unix:`) inside the quotes.
fn quoted_prefixed(prefix: &str, path: &Path) -> Result<String, Error> {
    let text = path.to_str().filter(|t| !t.contains(['"', '\\', '$']));
    match text {
        Some(text) => Ok(format!("\"{prefix}{text}\"")),
        None => Err(Error::Usage(format!(
            "--dir {} cannot be written into nginx's configuration",
            path.display()
        ))),
    }
}

/// nginx's configuration language: `text` in double quotes, `\` and `"` escaped (nginx reads `\\`,
/// `\"`, `\t`, `\r` and `\n` in quotes as escapes, so a regex's `\\` would lose its meaning).
fn nginx_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '\\' || c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// [`nginx_text`] where nginx expands variables (a map's value), which has no escape for `$`: it
/// comes from a variable holding one.
fn nginx_value(text: &str) -> String {
    nginx_text(text).replace('$', "${standin_dollar}")
}

/// The part of nginx's configuration that routes as the plan says.
struct Routing {
    /// At the `http` level: a map per condition (`1` when it holds), the map that picks the
    /// route, an upstream per route weighted as its keys, and a map per response header to add.
    http: String,
    /// The body of `location /`.
    location: String,
}

/// Envoy takes the first route whose conditions all hold. Every condition's map gives `1` or
/// `0`, and they are concatenated in route order: route i is taken when its span is all `1`s,
/// which the choosing map tests in route order, so that an earlier route wins. Each route is an
/// upstream of its own (one round-robin state per route, as each Envoy route keeps its own), and
/// `proxy_pass` picks it by name. The response headers Envoy adds depend on the route and on the
/// key that answered, which nginx knows by its address (`$upstream_addr`): one map per header to
/// add, from route and address to value (empty, and so not sent, for the others).
fn routing(plan: &Plan, upstreams: &[Upstream], unrouted: &str) -> Routing {
    let mut http = String::new();
    let mut location = String::new();
    let mut flags = String::from("@");
    let mut choices = String::new();
    let mut conditions = 0_usize;
    let mut rest = None;
    let mut statuses = Vec::new();
    // Route (its name in `$standin_route`), the address that answered ("" for the gateway
    // itself) and the headers added to that answer.
    let mut answers: Vec<(String, String, Headers)> = Vec::new();
    for (i, route) in plan.routes.iter().enumerate() {
        let name = match &route.target {
            Target::Split(split) if !split.is_empty() => {
                let name = format!("standin_r{i}");
                let mut servers = String::new();
                for u in upstreams {
                    let weight = split.weights.get(&u.subset).copied().unwrap_or(0);
                    // nginx's weights start at 1; a key at 0 is left out, so it gets nothing.
                    if weight == 0 {
                        continue;
                    }
                    servers.push_str(&format!(
                        "    server {} weight={weight} max_fails=0;\n",
                        u.addr
                    ));
                    let mut headers = route.headers.clone();
                    headers.extend(
                        route
                            .key_headers
                            .get(&u.subset)
                            .into_iter()
                            .flatten()
                            .cloned(),
                    );
                    answers.push((name.clone(), u.addr.to_string(), headers));
                }
                if split.unrouted > 0 {
                    servers.push_str(&format!(
                        "    server {unrouted} weight={} max_fails=0;\n",
                        split.unrouted
                    ));
                }
                http.push_str(&format!("  upstream {name} {{\n{servers}  }}\n"));
                name
            }
            target => {
                let name = format!("standin_s{i}");
                let status = match target {
                    Target::Status(status) => *status,
                    Target::Split(_) => 503,
                };
                statuses.push((name.clone(), status));
                answers.push((name.clone(), String::new(), route.headers.clone()));
                name
            }
        };
        if route.conditions.is_empty() {
            rest = Some(name);
            break;
        }
        let span = route.conditions.len();
        choices.push_str(&format!(
            "    {} {name};\n",
            nginx_text(&format!("~^@.{{{conditions}}}1{{{span}}}"))
        ));
        for condition in &route.conditions {
            let variable = format!("standin_c{conditions}");
            conditions += 1;
            let (holds, fails) = if condition.invert {
                ("0", "1")
            } else {
                ("1", "0")
            };
            let mut entries = String::new();
            if let Some(absent) = condition.absent {
                let outcome = if absent { "1" } else { "0" };
                entries.push_str(&format!("    {} {outcome};\n", nginx_text("~^\\z")));
            }
            entries.push_str(&format!(
                "    {} {holds};\n",
                nginx_text(&format!("~{}", condition.regex))
            ));
            http.push_str(&format!(
                "  map {} ${variable} {{\n{entries}    default {fails};\n  }}\n",
                condition.source
            ));
            flags.push_str(&format!("${{{variable}}}"));
        }
    }
    let rest = rest.unwrap_or_else(|| {
        statuses.push(("standin_unmatched".to_owned(), plan.unmatched));
        "standin_unmatched".to_owned()
    });
    http.push_str(&format!(
        "  map {} $standin_route {{\n{choices}    default {rest};\n  }}\n",
        nginx_text(&flags)
    ));
    if plan
        .routes
        .iter()
        .flat_map(|r| &r.conditions)
        .any(|c| c.source == PATH_VARIABLE)
    {
        http.push_str(&format!(
            "  map $request_uri {PATH_VARIABLE} {{\n    {} $1;\n    default \"\";\n  }}\n",
            nginx_text("~^([^?]*)")
        ));
    }

    // One map per header name and occurrence: a route may add a header twice (two Set-Cookies).
    let mut slots: Vec<(String, Headers)> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (route, address, headers) in &answers {
        let key = format!("{route}|{address}");
        // Two keys at one address cannot be told apart; the first one's headers are sent.
        if !seen.insert(key.clone()) {
            continue;
        }
        let mut occurrences: BTreeMap<String, usize> = BTreeMap::new();
        for (name, value) in headers {
            let lower = name.to_ascii_lowercase();
            let n = occurrences.entry(lower.clone()).or_default();
            let slot = slots
                .iter()
                .enumerate()
                .filter(|(_, (slot_name, _))| slot_name.eq_ignore_ascii_case(&lower))
                .nth(*n)
                .map(|(i, _)| i);
            *n += 1;
            let slot = match slot {
                Some(slot) => slot,
                None => {
                    slots.push((name.clone(), Vec::new()));
                    slots.len() - 1
                }
            };
            slots[slot].1.push((key.clone(), value.clone()));
        }
    }
    if slots
        .iter()
        .flat_map(|(_, e)| e)
        .any(|(_, v)| v.contains('$'))
    {
        http.push_str("  geo $standin_dollar {\n    default \"$\";\n  }\n");
    }
    for (i, (_, entries)) in slots.iter().enumerate() {
        let entries: String = entries
            .iter()
            .map(|(key, value)| format!("    {} {};\n", nginx_text(key), nginx_value(value)))
            .collect();
        http.push_str(&format!(
            "  map \"$standin_route|$upstream_addr\" $standin_h{i} {{\n{entries}    default \"\";\n  }}\n"
        ));
    }

    // `return` is the one thing that is safe inside `if` in a location.
    for (name, status) in &statuses {
        location.push_str(&format!(
            "      if ($standin_route = {name}) {{ return {status}; }}\n"
        ));
    }
    location.push_str("      proxy_pass http://$standin_route;\n      proxy_next_upstream off;\n");
    for (i, (name, _)) in slots.iter().enumerate() {
        location.push_str(&format!("      add_header {name} $standin_h{i} always;\n"));
    }
    Routing { http, location }
}

impl Setup {
    pub(crate) fn config_path(&self) -> PathBuf {
        self.dir.join("nginx.conf")
    }

    pub(crate) fn error_log(&self) -> PathBuf {
        self.dir.join("error.log")
    }

    /// The whole configuration for `plan`. One worker, so one round-robin state per route decides
    /// every request; a worker that outlives a reload is given 5 s to finish its requests, which bounds
    /// how long an apply waits for it to go.
    pub(crate) fn config(&self, plan: &Plan) -> Result<String, Error> {
        let d = |name: &str| quoted(&self.dir.join(name));
        // Answers the share of keys with no address: through nginx itself, so the round robin
        // takes that share out of the keys' turns.
        let unrouted = quoted_prefixed("unix:", &self.dir.join("unrouted.sock"))?;
        let Routing { http, location } = routing(plan, &self.upstreams, &unrouted);
        Ok(format!(
            "# Written by the ingress gateway stand-in (tools/ingress_standin/nginx_config.rs); generation {generation}: {plan}
daemon off;
worker_processes 1;
worker_shutdown_timeout 5s;
pid {pid};
error_log {error_log} notice;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  keepalive_timeout 0;
  client_body_temp_path {body};
  proxy_temp_path {proxy};
  fastcgi_temp_path {fastcgi};
  uwsgi_temp_path {uwsgi};
  scgi_temp_path {scgi};
  # The header maps' keys hold a route and an address: longer than the default bucket allows.
  map_hash_bucket_size 256;
{http}  server {{
    listen {listen};
    location = {GENERATION_PATH} {{ return 200 \"{generation}\\n\"; }}
    location / {{
{location}    }}
  }}
  server {{
    listen {unrouted};
    return 503;
  }}
}}
",
            generation = self.generation,
            pid = d("nginx.pid")?,
            error_log = quoted(&self.error_log())?,
            body = d("body")?,
            proxy = d("proxy")?,
            fastcgi = d("fastcgi")?,
            uwsgi = d("uwsgi")?,
            scgi = d("scgi")?,
            listen = self.listen,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Route;
    use crate::plan::tests::{plan_of, split, sticky, upstreams};
    use crate::programs::default_nginx;
    use serde_json::json;

    /// The configuration nginx is given for the sticky routes: a condition map per route, the
    /// choice in route order, an upstream per route, and a header map per Set-Cookie. nginx
    /// itself checks it when it is installed.
    #[test]
    fn the_nginx_configuration_routes_as_planned() {
        let (mut plan, _) = plan_of(json!([sticky("v2"), sticky("v1"), split(75, 25)]));
        // A value nginx would expand as a variable if written as is.
        if let Some(Route { key_headers, .. }) = plan.routes.last_mut()
            && let Some(headers) = key_headers.get_mut("v2")
        {
            headers.push(("x-price".to_owned(), "$5 \"net\"".to_owned()));
        }
        let Routing { http, location } = routing(&plan, &upstreams(), "\"unix:/x.sock\"");
        for expected in [
            r#"map $http_cookie $standin_c0 {
    "~^\\z" 0;
    "~^(?:^(.*;\\s*)?canary-model=v2(;.*)?$)\\z" 1;
    default 0;
  }"#,
            r#"map "@${standin_c0}${standin_c1}" $standin_route {
    "~^@.{0}1{1}" standin_r0;
    "~^@.{1}1{1}" standin_r1;
    default standin_r2;
  }"#,
            "upstream standin_r2 {
    server 127.0.0.1:1 weight=75 max_fails=0;
    server 127.0.0.1:2 weight=25 max_fails=0;
  }",
            r#"map "$standin_route|$upstream_addr" $standin_h0 {
    "standin_r2|127.0.0.1:1" "canary-model=v1; Path=/; Max-Age=86400";
    "standin_r2|127.0.0.1:2" "canary-model=v2; Path=/; Max-Age=86400";
    default "";
  }"#,
            r#""standin_r2|127.0.0.1:2" "${standin_dollar}5 \"net\"";"#,
        ] {
            assert!(http.contains(expected), "no\n{expected}\nin\n{http}");
        }
        assert_eq!(
            location,
            "      proxy_pass http://$standin_route;
      proxy_next_upstream off;
      add_header set-cookie $standin_h0 always;
      add_header x-price $standin_h1 always;
"
        );

        let Some(nginx) = Some(default_nginx()).filter(|nginx| nginx.is_file()) else {
            eprintln!(
                "\n********** SKIPPED nginx -t of the stand-in's configuration: no nginx **********\n"
            );
            return;
        };
        let dir = std::env::temp_dir().join(format!("standin-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let setup = Setup {
            binary: nginx,
            dir: dir.clone(),
            // nginx -t binds nothing.
            listen: SocketAddr::from(([127, 0, 0, 1], 9)),
            upstreams: upstreams(),
            generation: 1,
        };
        let text = setup.config(&plan).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(setup.config_path(), &text).unwrap_or_else(|e| panic!("{e}"));
        let output = std::process::Command::new(&setup.binary)
            .arg("-t")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(setup.config_path())
            .arg("-e")
            .arg(setup.error_log())
            .output()
            .unwrap_or_else(|e| panic!("nginx -t: {e}"));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            output.status.success(),
            "nginx -t: {}\n{text}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
