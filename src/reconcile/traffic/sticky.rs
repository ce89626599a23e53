//! Pure: what a sticky release's routes say, whoever writes them. Each answer of the split carries
//! the version that gave it (a cookie, or a header); a request that carries it back matches a
//! route of its own to that version. Such a route exists only while its version has a share of
//! the split: at 0 % (before the canary starts, after a rollback or an abort, or for the stable
//! after a full promotion) its conversations fall through to the split and are told their new
//! version in the answer.

use crate::reconcile::decide::Decision;
use crate::reconcile::validated::{Role, Stickiness, Validated, Version};

/// Name of a version's match route, in the VirtualService and the HTTPRoute alike.
pub fn route_name(version: &Version) -> String {
    format!("sticky-{}", version.name)
}

/// The versions that get a match route, canary first.
pub fn sticky_versions<'a>(v: &'a Validated, decision: &Decision) -> Vec<&'a Version> {
    if v.stickiness.is_none() {
        return Vec::new();
    }
    let mut versions: Vec<&Version> = v
        .versions()
        .into_iter()
        .filter(|version| match version.role {
            Role::Stable => decision.stable_weight() > 0,
            Role::Canary => decision.canary_weight > 0,
        })
        .collect();
    versions.reverse();
    versions
}

/// How a request is recognised as belonging to `version`'s conversations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestMatch {
    /// The header, matched exactly.
    Exact { header: String, value: String },
    /// The header, matched in whole by an RE2 expression (which nginx's PCRE reads alike).
    Regex { header: String, pattern: String },
}

pub fn request_match(stickiness: &Stickiness, version: &Version) -> RequestMatch {
    match stickiness {
        // The cookie among the others of the Cookie header: at its start or after a `;`, and
        // with exactly this value.
        Stickiness::Cookie { name, .. } => RequestMatch::Regex {
            header: "cookie".to_owned(),
            pattern: format!(
                r"^(.*;\s*)?{}={}(;.*)?$",
                name.replace('.', r"\."),
                version.name
            ),
        },
        Stickiness::Header { name } => RequestMatch::Exact {
            header: name.clone(),
            value: version.name.clone(),
        },
    }
}

/// The header (name, value) added to the answers `version` gives through the split.
pub fn response_header(stickiness: &Stickiness, version: &Version) -> (String, String) {
    match stickiness {
        Stickiness::Cookie { name, max_age } => {
            let mut cookie = format!("{name}={}; Path=/", version.name);
            if let Some(seconds) = max_age {
                cookie.push_str(&format!("; Max-Age={seconds}"));
            }
            ("set-cookie".to_owned(), cookie)
        }
        Stickiness::Header { name } => (name.clone(), version.name.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::decide::Strategy;
    use crate::reconcile::testing::{decided, lab_validated};

    fn sticky(weight: i32, stickiness: Stickiness) -> (Validated, Decision) {
        let mut v = lab_validated();
        v.strategy = Strategy::Manual {
            canary_weight: weight,
        };
        v.stickiness = Some(stickiness);
        let decision = decided(&v);
        (v, decision)
    }

    fn cookie() -> Stickiness {
        Stickiness::Cookie {
            name: "canary.model".to_owned(),
            max_age: Some(3600),
        }
    }

    /// Each case: the canary's weight and the versions with a match route.
    #[test]
    fn a_version_keeps_its_conversations_while_it_has_a_share() {
        let cases: [(i32, &[&str]); 4] = [
            (0, &["v1"]),
            (25, &["v2", "v1"]),
            (99, &["v2", "v1"]),
            (100, &["v2"]),
        ];
        for (weight, expected) in cases {
            let (v, decision) = sticky(weight, cookie());
            let names: Vec<&str> = sticky_versions(&v, &decision)
                .iter()
                .map(|ver| ver.name.as_str())
                .collect();
            assert_eq!(names, expected, "weight {weight}");
        }
        let mut plain = lab_validated();
        plain.stickiness = None;
        assert!(sticky_versions(&plain, &decided(&plain)).is_empty());
    }

    #[test]
    fn the_cookie_is_set_and_recognised_among_others() {
        let (v, _) = sticky(25, cookie());
        let canary = v
            .canary
            .as_ref()
            .unwrap_or_else(|| panic!("lab has a canary"));
        let stickiness = v.stickiness.as_ref().unwrap_or_else(|| panic!("sticky"));
        assert_eq!(
            response_header(stickiness, canary),
            (
                "set-cookie".to_owned(),
                "canary.model=v2; Path=/; Max-Age=3600".to_owned()
            )
        );
        let RequestMatch::Regex { header, pattern } = request_match(stickiness, canary) else {
            panic!("a cookie is matched by a pattern");
        };
        assert_eq!(header, "cookie");
        let re = regex::Regex::new(&pattern).unwrap_or_else(|e| panic!("{e}"));
        let cases = [
            ("canary.model=v2", true),
            ("a=1; canary.model=v2", true),
            ("canary.model=v2; b=2", true),
            ("a=1;canary.model=v2;b=2", true),
            ("canary.model=v1", false),
            ("canary.model=v22", false),
            ("xcanary.model=v2", false),
            ("canaryXmodel=v2", false),
            ("", false),
        ];
        for (cookie, matches) in cases {
            assert_eq!(re.is_match(cookie), matches, "{cookie:?}");
        }
    }

    #[test]
    fn a_header_is_echoed_and_matched_exactly() {
        let header = Stickiness::Header {
            name: "x-canary-model".to_owned(),
        };
        let (v, _) = sticky(25, header.clone());
        assert_eq!(
            request_match(&header, &v.stable),
            RequestMatch::Exact {
                header: "x-canary-model".to_owned(),
                value: "v1".to_owned()
            }
        );
        assert_eq!(
            response_header(&header, &v.stable),
            ("x-canary-model".to_owned(), "v1".to_owned())
        );
    }
}
