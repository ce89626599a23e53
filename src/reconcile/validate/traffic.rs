//! The traffic part of a spec: who routes it (each provider checks its own settings, see
//! [`crate::reconcile::traffic::Provider::settings`]) and how conversations stay on a version.

use super::rollout::parse_duration;
use crate::api::CanaryReleaseSpec;
use crate::reconcile::names::is_cookie_name;
use crate::reconcile::traffic::{self, istio};
use crate::reconcile::validated::{Stickiness, Traffic};

/// Who routes the release's traffic and from where, with every problem of `spec.gateway` and
/// `spec.traffic` reported.
pub fn traffic(
    spec: &CanaryReleaseSpec,
    name: &str,
    problem: &mut impl FnMut(&str, String),
) -> Traffic {
    let settings = spec.traffic.clone().unwrap_or_default();
    // `spec.gateway` is checked whichever provider is named, so one edit fixes every problem.
    if let Some(gateway) = &spec.gateway {
        istio::check_gateway(gateway, settings.mesh, problem);
    }
    traffic::of(settings.provider).settings(spec, name, &settings, problem)
}

/// Headers a sticky route must not be keyed on: the client or a proxy sets them for their own
/// purpose, or the operator's routes already use them.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "content-length",
    "content-type",
    "cookie",
    "host",
    "set-cookie",
    "te",
    "transfer-encoding",
    "upgrade",
    "x-forwarded-for",
    "x-request-id",
];

pub fn stickiness(
    spec: &CanaryReleaseSpec,
    problem: &mut impl FnMut(&str, String),
) -> Option<Stickiness> {
    let sticky = spec.traffic.as_ref()?.stickiness.as_ref()?;
    match (&sticky.cookie, &sticky.header) {
        (Some(cookie), None) => {
            let field = "spec.traffic.stickiness.cookie";
            if !is_cookie_name(&cookie.name) {
                problem(
                    &format!("{field}.name"),
                    format!(
                        "{:?} is not a cookie name: use letters, digits, '_', '-' and '.'",
                        cookie.name
                    ),
                );
            }
            let max_age = match &cookie.max_age {
                Some(text) => match parse_duration(&format!("{field}.maxAge"), text, problem) {
                    Some(d) if d.as_secs() == 0 => {
                        problem(
                            &format!("{field}.maxAge"),
                            format!(
                                "{text:?} would expire the cookie at once: use at least 1s, or leave it unset for a session cookie"
                            ),
                        );
                        None
                    }
                    d => d.map(|d| d.as_secs()),
                },
                None => None,
            };
            Some(Stickiness::Cookie {
                name: cookie.name.clone(),
                max_age,
            })
        }
        (None, Some(header)) => {
            let field = "spec.traffic.stickiness.header.name";
            let name = &header.name;
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !name.starts_with('-');
            if !valid {
                problem(
                    field,
                    format!(
                        "{name:?} is not a header name: use lowercase letters, digits and '-', such as x-canary-model"
                    ),
                );
            } else if RESERVED_HEADERS.contains(&name.as_str()) {
                problem(
                    field,
                    format!(
                        "{name:?} carries something else already; choose a name of your own, such as x-canary-model"
                    ),
                );
            }
            Some(Stickiness::Header { name: name.clone() })
        }
        _ => {
            problem(
                "spec.traffic.stickiness",
                "set exactly one of cookie (browsers) or header (API clients)".to_owned(),
            );
            None
        }
    }
}
