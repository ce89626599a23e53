//! Pure: decides, per child, whether the cluster already holds what we want.
//!
//! A reconcile that finds everything in place must send no write, so the decision cannot be "apply
//! and let the server sort it out". Two checks together make it exact enough:
//! * the applied-hash annotation tells whether the desired content changed since our last apply
//!   (this also catches fields we stopped setting, which a subset test cannot see);
//! * a subset test tells whether anyone changed our fields since; fields the server defaults or
//!   others own are ignored, lists must match in length so an appended route counts as drift.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use serde::Serialize;
use serde_json::Value;

use crate::labels;

/// What to do with one child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// It does not exist: create it.
    Create,
    /// It matches: leave it alone.
    Unchanged,
    /// It differs. `drift` is true when the desired content is what we applied last time, so the
    /// difference was made by someone else and restoring it deserves an Event.
    Update { drift: bool },
    /// An object of that name exists and is not controlled by this release; the message names it.
    Foreign(String),
}

/// Compares a desired child with the current one (if any) owned, or not, by the release with `owner_uid`.
pub fn judge<K: Resource<DynamicType = ()> + Serialize>(
    desired: &K,
    current: Option<&K>,
    owner_uid: &str,
) -> Change {
    let Some(current) = current else {
        return Change::Create;
    };
    let meta = current.meta();
    if let Some(foreign) = foreign::<K>(
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
        crate::cache::controller_of(meta),
        owner_uid,
    ) {
        return foreign;
    }
    let same_hash =
        applied_hash(desired).is_some() && applied_hash(desired) == applied_hash(current);
    let matches = match (serde_json::to_value(desired), serde_json::to_value(current)) {
        (Ok(d), Ok(c)) => contains(&c, &d),
        _ => false,
    };
    match (same_hash, matches) {
        (true, true) => Change::Unchanged,
        (same_hash, _) => Change::Update { drift: same_hash },
    }
}

/// Judges an object the caches know only by name and controller, because it is not labelled as
/// ours: someone else's, or one of ours whose labels were edited, which an apply puts right.
pub fn judge_unlabelled<K: Resource<DynamicType = ()>>(
    namespace: &str,
    name: &str,
    controller: Option<&OwnerReference>,
    owner_uid: &str,
) -> Change {
    foreign::<K>(namespace, name, controller, owner_uid).unwrap_or(Change::Update { drift: true })
}

/// `Change::Foreign` unless the object is controlled by the release with `owner_uid`.
fn foreign<K: Resource<DynamicType = ()>>(
    namespace: &str,
    name: &str,
    controller: Option<&OwnerReference>,
    owner_uid: &str,
) -> Option<Change> {
    if controller.is_some_and(|o| o.uid == owner_uid) {
        return None;
    }
    let held_by = match controller {
        Some(o) => format!("is controlled by {} {}", o.kind, o.name),
        None => "was not created by this CanaryRelease".to_owned(),
    };
    Some(Change::Foreign(format!(
        "{} {namespace}/{name} already exists and {held_by}; it is left untouched",
        K::kind(&()),
    )))
}

fn applied_hash<K: Resource>(object: &K) -> Option<&String> {
    object
        .meta()
        .annotations
        .as_ref()?
        .get(labels::APPLIED_HASH)
}

/// Whether every field of `desired` is present in `current` with the same value.
pub fn contains(current: &Value, desired: &Value) -> bool {
    contains_at(current, desired, false)
}

/// `quantities` is true below a `resources` field, where the server rewrites quantities into
/// canonical form (`0.5` becomes `500m`, `1.5Gi` becomes `1536Mi`): equal amounts are equal there.
fn contains_at(current: &Value, desired: &Value, quantities: bool) -> bool {
    match (current, desired) {
        (Value::Object(c), Value::Object(d)) => d.iter().all(|(k, dv)| match c.get(k) {
            Some(cv) => contains_at(cv, dv, quantities || k == "resources"),
            // A null or empty value we send is the same as the server leaving the field out.
            None => is_empty(dv),
        }),
        (Value::Array(c), Value::Array(d)) => {
            c.len() == d.len()
                && c.iter()
                    .zip(d)
                    .all(|(cv, dv)| contains_at(cv, dv, quantities))
        }
        (Value::Number(c), Value::Number(d)) => c.as_f64() == d.as_f64(),
        (Value::String(c), Value::String(d)) if quantities && c != d => {
            match (quantity(c), quantity(d)) {
                (Some(c), Some(d)) => (c - d).abs() <= f64::EPSILON * c.abs().max(d.abs()) * 4.0,
                _ => false,
            }
        }
        (c, d) => c == d,
    }
}

/// The amount a Kubernetes quantity stands for (`250m`, `1.5Gi`, `2e3`, `128M`), or `None`.
fn quantity(text: &str) -> Option<f64> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent => 10f64.powi(exponent.strip_prefix(['e', 'E'])?.parse().ok()?),
    };
    Some(number * scale)
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use serde_json::json;

    use super::*;
    use crate::reconcile::testing::built;
    use crate::reconcile::testing::{UID, lab_validated};

    fn lab_config_map() -> ConfigMap {
        built(&lab_validated()).config_maps[0].clone()
    }

    /// What the API server returns for an object we applied: our fields plus defaults and metadata.
    fn as_stored(desired: &ConfigMap) -> ConfigMap {
        let mut stored = desired.clone();
        stored.metadata.resource_version = Some("42".into());
        stored.metadata.uid = Some("child-uid".into());
        stored
            .metadata
            .labels
            .get_or_insert_default()
            .insert("added-by-someone".into(), "fine".into());
        stored
    }

    #[test]
    fn verdicts() {
        let desired = lab_config_map();
        assert_eq!(judge(&desired, None, UID), Change::Create);
        assert_eq!(
            judge(&desired, Some(&as_stored(&desired)), UID),
            Change::Unchanged,
            "extra labels and server fields are not drift"
        );

        let mut edited = as_stored(&desired);
        edited
            .data
            .get_or_insert_default()
            .insert("AZURE_MODEL_NAME".into(), "gpt-3.5".into());
        assert_eq!(
            judge(&desired, Some(&edited), UID),
            Change::Update { drift: true }
        );

        // The user changed the release: the hash differs, so it is an update but not drift.
        let mut older = as_stored(&desired);
        older
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(crate::labels::APPLIED_HASH.into(), "0000".into());
        assert_eq!(
            judge(&desired, Some(&older), UID),
            Change::Update { drift: false }
        );
    }

    #[test]
    fn a_field_we_stopped_setting_is_caught_by_the_hash() {
        let desired = lab_config_map();
        let mut previous = desired.clone();
        previous
            .data
            .get_or_insert_default()
            .insert("OLD_SETTING".into(), "1".into());
        let previous = crate::reconcile::meta::fingerprint(&previous);
        let mut stored = as_stored(&desired);
        stored
            .data
            .get_or_insert_default()
            .insert("OLD_SETTING".into(), "1".into());
        stored
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(crate::labels::APPLIED_HASH.into(), previous);
        assert_eq!(
            judge(&desired, Some(&stored), UID),
            Change::Update { drift: false }
        );
    }

    #[test]
    fn objects_of_others_are_foreign() {
        let desired = lab_config_map();
        let mut theirs = as_stored(&desired);
        theirs.metadata.owner_references = None;
        match judge(&desired, Some(&theirs), UID) {
            Change::Foreign(message) => {
                assert!(
                    message.contains("ConfigMap azureopenai/azureopenaichat-v1"),
                    "{message}"
                );
                assert!(
                    message.contains("not created by this CanaryRelease"),
                    "{message}"
                );
            }
            other => panic!("expected Foreign, got {other:?}"),
        }
        theirs.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "canary.dev/v1alpha1".into(),
            kind: "CanaryRelease".into(),
            name: "other-release".into(),
            uid: "other-uid".into(),
            controller: Some(true),
            ..OwnerReference::default()
        }]);
        match judge(&desired, Some(&theirs), UID) {
            Change::Foreign(message) => assert!(
                message.contains("controlled by CanaryRelease other-release"),
                "{message}"
            ),
            other => panic!("expected Foreign, got {other:?}"),
        }
    }

    #[test]
    fn subset_rules() {
        let current = json!({"a": 1, "b": {"c": [1, 2], "d": "x"}, "extra": true});
        assert!(contains(&current, &json!({"a": 1.0, "b": {"d": "x"}})));
        assert!(
            contains(&current, &json!({"missing": null, "empty": {}})),
            "empty values equal absent ones"
        );
        assert!(
            !contains(&current, &json!({"b": {"c": [1]}})),
            "a list must match in length"
        );
        assert!(!contains(&current, &json!({"a": 2})));
        assert!(!contains(&current, &json!({"b": {"d": "y"}})));
    }

    #[test]
    fn canonical_quantities_equal_what_we_sent() {
        let stored = json!({"resources": {"requests": {"cpu": "500m", "memory": "1536Mi"}, "limits": {"cpu": "2"}}});
        let sent = json!({"resources": {"requests": {"cpu": "0.5", "memory": "1.5Gi"}, "limits": {"cpu": "2000m"}}});
        assert!(contains(&stored, &sent));
        let more = json!({"resources": {"requests": {"cpu": "0.6"}}});
        assert!(!contains(&stored, &more), "a different amount is drift");
        // Outside `resources` strings are compared as they are: "1" and "1.0" differ in a ConfigMap.
        assert!(!contains(
            &json!({"data": {"N": "1"}}),
            &json!({"data": {"N": "1.0"}})
        ));
    }

    #[test]
    fn quantities() {
        for (text, amount) in [
            ("250m", 0.25),
            ("1Ki", 1024.0),
            ("2e3", 2000.0),
            ("128M", 1.28e8),
            ("1", 1.0),
            ("1.5Gi", 1.5 * 1024f64.powi(3)),
        ] {
            assert_eq!(quantity(text), Some(amount), "{text}");
        }
        for text in ["", "abc", "1X", "Mi"] {
            assert_eq!(quantity(text), None, "{text}");
        }
    }
}
