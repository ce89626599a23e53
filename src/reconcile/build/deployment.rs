use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapEnvSource, Container, ContainerPort, EnvFromSource, PodSpec, PodTemplateSpec, SecretEnvSource,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::{fingerprint, metadata};
use crate::labels;
use crate::reconcile::validate::{Validated, Version};

/// The version's pods. With autoscaling on, `replicas` is left out so the HPA alone sets it.
pub fn deployment(v: &Validated, version: &Version) -> Deployment {
    let pod_labels = labels::version(&v.name, &version.name, version.role.as_str());
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
        metadata: metadata(v, &version.object_name, pod_labels.clone()),
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
                        resources: version.resources.clone(),
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
