use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};

use crate::labels;
use crate::reconcile::meta::metadata;
use crate::reconcile::validated::{Autoscaling, Validated, Version};

/// Scales one version on CPU, as the lab's `kubectl autoscale` did, independently of the traffic split.
pub fn autoscaler(
    v: &Validated,
    version: &Version,
    scaling: &Autoscaling,
) -> HorizontalPodAutoscaler {
    HorizontalPodAutoscaler {
        metadata: metadata(
            v,
            &version.object_name,
            labels::version(&v.name, &version.name, version.role.as_str()),
        ),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: version.object_name.clone(),
            },
            min_replicas: Some(scaling.min_replicas),
            max_replicas: scaling.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_owned(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_owned(),
                    target: MetricTarget {
                        type_: "Utilization".to_owned(),
                        average_utilization: Some(scaling.target_cpu_utilization_percentage),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        },
        ..HorizontalPodAutoscaler::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::reconcile::testing::{lab_validated, owner, to_json};

    #[test]
    fn lab_autoscaler_matches_kubectl_autoscale() {
        let v = lab_validated();
        let scaling = v
            .autoscaling
            .clone()
            .unwrap_or_else(|| panic!("lab autoscales"));
        let expected = json!({
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {
                "name": "azureopenaichat-v1",
                "namespace": "azureopenai",
                "labels": {
                    "app": "azureopenaichat",
                    "version": "v1",
                    "app.kubernetes.io/name": "azureopenaichat",
                    "app.kubernetes.io/instance": "azureopenaichat",
                    "app.kubernetes.io/component": "stable",
                    "app.kubernetes.io/managed-by": "canary-operator",
                },
                "ownerReferences": owner(),
            },
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "azureopenaichat-v1"},
                "minReplicas": 1,
                "maxReplicas": 10,
                "metrics": [{
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}},
                }],
            },
        });
        assert_eq!(to_json(&autoscaler(&v, &v.stable, &scaling)), expected);
    }
}
