use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapEnvSource, Container, ContainerPort, EnvFromSource, PodSpec, PodTemplateSpec,
    ResourceClaim, ResourceRequirements, SecretEnvSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::labels;
use crate::reconcile::meta::{fingerprint, metadata};
use crate::reconcile::validated::{Resources, Validated, Version};

/// The version's pods. With autoscaling on, `replicas` is left out so the HPA alone sets it.
pub fn deployment(v: &Validated, version: &Version) -> Deployment {
    let object_labels = labels::version(&v.name, &version.name, version.role.as_str());
    // The pods carry no role: finalising a rollout makes the canary's version the stable one, and
    // a role label in the template would restart the very pods that serve all the traffic.
    let mut pod_labels = object_labels.clone();
    pod_labels.remove(labels::COMPONENT);
    let mut env_from = vec![EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource {
            name: version.object_name.clone(),
            optional: None,
        }),
        ..EnvFromSource::default()
    }];
    if let Some(secret) = &v.secret_name {
        env_from.push(EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: secret.clone(),
                optional: None,
            }),
            ..EnvFromSource::default()
        });
    }
    Deployment {
        metadata: metadata(v, &version.object_name, object_labels),
        spec: DeploymentSpec {
            replicas: version.replicas,
            // The selector is immutable, so it holds only what can never change for this name.
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([
                    (labels::APP.to_owned(), v.name.clone()),
                    (labels::VERSION.to_owned(), version.name.clone()),
                ])),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        labels::CONFIG_HASH.to_owned(),
                        fingerprint(&version.config),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: v.name.clone(),
                        image: Some(version.image.clone()),
                        ports: Some(vec![ContainerPort {
                            name: Some("http".to_owned()),
                            container_port: v.port,
                            protocol: Some("TCP".to_owned()),
                            ..ContainerPort::default()
                        }]),
                        env_from: Some(env_from),
                        resources: version.resources.as_ref().map(requirements),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

/// The container's resources, with the quantities as the user wrote them.
fn requirements(resources: &Resources) -> ResourceRequirements {
    let quantities = |map: &BTreeMap<String, String>| {
        map.iter()
            .map(|(name, quantity)| (name.clone(), Quantity(quantity.clone())))
            .collect()
    };
    ResourceRequirements {
        limits: resources.limits.as_ref().map(quantities),
        requests: resources.requests.as_ref().map(quantities),
        claims: resources.claims.as_ref().map(|claims| {
            claims
                .iter()
                .map(|c| ResourceClaim {
                    name: c.name.clone(),
                    request: c.request.clone(),
                })
                .collect()
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    #[allow(unused_imports)]
    use crate::reconcile::testing::{canary, canary_spec};
    use crate::reconcile::testing::{lab_release, lab_validated, owner, to_json};
    use crate::reconcile::validate::validate;

    /// Finalising makes the canary the stable: its pods must not change, only its objects' labels.
    #[test]
    fn a_version_changing_role_keeps_its_pods() {
        let v = lab_validated();
        let mut as_stable = canary(&v).clone();
        as_stable.role = crate::reconcile::validated::Role::Stable;
        let (before, after) = (deployment(&v, canary(&v)), deployment(&v, &as_stable));
        assert_eq!(
            before.spec, after.spec,
            "the pod template and selector stay the same"
        );
        assert_ne!(
            before.metadata.labels, after.metadata.labels,
            "the object's role label follows"
        );
    }

    #[test]
    fn lab_canary_deployment() {
        let v = lab_validated();
        let labels = json!({
            "app": "azureopenaichat",
            "version": "v2",
            "app.kubernetes.io/name": "azureopenaichat",
            "app.kubernetes.io/instance": "azureopenaichat",
            "app.kubernetes.io/component": "canary",
            "app.kubernetes.io/managed-by": "canary-operator",
        });
        let mut pod_labels = labels.clone();
        if let Some(map) = pod_labels.as_object_mut() {
            map.remove("app.kubernetes.io/component");
        }
        let expected = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "azureopenaichat-v2",
                "namespace": "azureopenai",
                "labels": labels,
                "ownerReferences": owner(),
            },
            // No `replicas`: the lab example autoscales, and the HPA must be the only writer.
            "spec": {
                "selector": {"matchLabels": {"app": "azureopenaichat", "version": "v2"}},
                "template": {
                    "metadata": {
                        "labels": pod_labels,
                        "annotations": {"canary.dev/config-hash": fingerprint(&canary(&v).config)},
                    },
                    "spec": {
                        "containers": [{
                            "name": "azureopenaichat",
                            "image": "myregistry.azurecr.io/canarydeploymentapplication:latest",
                            "ports": [{"name": "http", "containerPort": 5000, "protocol": "TCP"}],
                            "envFrom": [
                                {"configMapRef": {"name": "azureopenaichat-v2"}},
                                {"secretRef": {"name": "azure-openai"}},
                            ],
                        }],
                    },
                },
            },
        });
        assert_eq!(to_json(&deployment(&v, canary(&v))), expected);
    }

    /// The container gets the resources exactly as the spec has them, as when the spec's value was
    /// copied through: any other spelling of a quantity, or an empty map dropped, would make the
    /// operator rewrite every Deployment. Each case: what is set, and `resources` as YAML.
    #[test]
    fn resources_reach_the_container_as_written() {
        let cases = [
            ("nothing", None),
            ("an empty object", Some("{}")),
            (
                "requests and limits",
                Some("{requests: {cpu: 100m, memory: 128Mi}, limits: {memory: 256Mi}}"),
            ),
            (
                "quantities in other spellings",
                Some(
                    "{requests: {cpu: '0.5', memory: '1e9', ephemeral-storage: 2G}, limits: {nvidia.com/gpu: '1'}}",
                ),
            ),
            ("empty maps", Some("{requests: {}, limits: {}}")),
            (
                "claims, with and without a request",
                Some("{claims: [{name: gpu}, {name: shared, request: large}]}"),
            ),
        ];
        for (what, yaml) in cases {
            let mut release = lab_release();
            canary_spec(&mut release).resources = yaml
                .map(|yaml| serde_norway::from_str(yaml).unwrap_or_else(|e| panic!("{what}: {e}")));
            let v = validate(&release, "cluster.local").unwrap_or_else(|p| panic!("{what}: {p}"));
            let pod = deployment(&v, canary(&v)).spec.template.spec;
            let resources = pod.and_then(|pod| pod.containers.into_iter().next()?.resources);
            assert_eq!(resources, canary_spec(&mut release).resources, "{what}");
        }
    }

    #[test]
    fn replicas_are_set_only_without_autoscaling() {
        let mut release = lab_release();
        release.spec.autoscaling = None;
        release.spec.stable.replicas = Some(3);
        let v = validate(&release, "cluster.local").unwrap_or_else(|p| panic!("{p}"));
        assert_eq!(deployment(&v, &v.stable).spec.replicas, Some(3));
        assert_eq!(
            deployment(&v, canary(&v)).spec.replicas,
            Some(1),
            "default is one pod"
        );
    }

    #[test]
    fn config_change_changes_the_pod_template() {
        let before = lab_validated();
        let mut release = lab_release();
        release
            .spec
            .config
            .insert("AZURE_API_URL".into(), "https://other.example/".into());
        let after = validate(&release, "cluster.local").unwrap_or_else(|p| panic!("{p}"));
        let template =
            |v: &crate::reconcile::validated::Validated| deployment(v, &v.stable).spec.template;
        assert_ne!(
            template(&before),
            template(&after),
            "pods must roll when their config changes"
        );
        assert_ne!(
            fingerprint(&before.stable.config),
            fingerprint(&canary(&before).config),
            "the two versions differ by model, so their hashes differ"
        );
    }
}
