//! The validated release: the one value that decide and build read. Plain data, free of any
//! Kubernetes type, so the decisions made on it are tested with tables of plain values and can
//! move to a crate of their own as they are. `validate` fills it from a `CanaryRelease`; build turns
//! its owner and resources into Kubernetes types, where the objects are made.

use std::collections::BTreeMap;

use super::decide::Strategy;
use crate::claims::{Bind, Text, gateway_ref, selector_text};

/// Which of the two versions a value belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Stable,
    Canary,
}

impl Role {
    /// Value of the `app.kubernetes.io/component` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Stable => "stable",
            Role::Canary => "canary",
        }
    }
}

/// A release the build step can turn into objects without further checks.
#[derive(Clone, Debug, PartialEq)]
pub struct Validated {
    pub name: String,
    pub namespace: String,
    /// The release's uid. Children name their controller by name and uid, so a release deleted
    /// and created again under the same name does not adopt its predecessor's children.
    pub uid: String,
    pub port: i32,
    pub secret_name: Option<String>,
    pub stable: Version,
    /// `None` in the steady state: the stable version serves everything.
    pub canary: Option<Version>,
    /// How the split is steered; the decide step turns it into the weights applied.
    pub strategy: Strategy,
    pub autoscaling: Option<Autoscaling>,
    /// Who routes the traffic, and from where.
    pub traffic: Traffic,
    /// How a conversation stays on one version; `None`: every request is split anew.
    pub stickiness: Option<Stickiness>,
    /// Fully qualified name of the Service, used as the Istio host everywhere so that the
    /// DestinationRule and the VirtualService always name the same host.
    pub host: String,
}

impl Validated {
    /// A split in words, as status messages and Events write it.
    pub fn describe_split(&self, stable: i32, canary: i32) -> String {
        let stable = format!("{stable}% to {} ({})", self.stable.name, self.stable.model);
        match &self.canary {
            Some(c) => format!("{stable}, {canary}% to {} ({})", c.name, c.model),
            None => format!("{stable}; no canary"),
        }
    }

    /// The Istio ingress Gateway traffic enters through, if any.
    pub fn gateway(&self) -> Option<&Ingress> {
        match &self.traffic {
            Traffic::Istio { gateway, .. } => gateway.as_ref(),
            Traffic::GatewayApi(_) => None,
        }
    }

    /// Name of a version's own Service (the Gateway API provider splits between Services).
    pub fn version_service(&self, version: &Version) -> String {
        version.object_name.clone()
    }

    /// The hosts the release's routes claim, and where (see [`crate::claims`]). The Gateway it
    /// creates is named after the release; the names of existing Gateways are relative to its
    /// namespace; a Gateway API route without host names claims every host.
    pub fn binds(&self) -> Vec<Bind> {
        let lower = |hosts: &[String]| -> Vec<Text> {
            hosts
                .iter()
                .map(|h| h.to_ascii_lowercase().into())
                .collect()
        };
        let relative = |gateway: &str| gateway_ref(gateway, &self.namespace);
        let mut binds = Vec::new();
        match &self.traffic {
            Traffic::Istio { gateway, mesh } => {
                match gateway {
                    Some(Ingress::Create {
                        selector,
                        port,
                        hosts,
                    }) => {
                        let gateway = relative(&self.name);
                        let selector: Text = selector_text(selector).into();
                        for host in lower(hosts) {
                            binds.push(Bind::Listener {
                                gateway: gateway.clone(),
                                selector: selector.clone(),
                                port: u32::try_from(*port).unwrap_or_default(),
                                host: host.clone(),
                            });
                            binds.push(Bind::Route {
                                gateway: gateway.clone(),
                                host,
                            });
                        }
                    }
                    Some(Ingress::Existing { gateways, hosts }) => {
                        let hosts = lower(hosts);
                        for gateway in gateways.iter().map(|g| relative(g)) {
                            binds.extend(hosts.iter().map(|host| Bind::Route {
                                gateway: gateway.clone(),
                                host: host.clone(),
                            }));
                        }
                    }
                    None => {}
                }
                if *mesh {
                    binds.push(Bind::MeshRoute {
                        host: self.host.to_ascii_lowercase().into(),
                    });
                }
            }
            Traffic::GatewayApi(settings) => {
                let hosts = match settings.hostnames.as_slice() {
                    [] => vec![Text::from("*")],
                    hosts => lower(hosts),
                };
                for parent in &settings.parent_refs {
                    let gateway: Text = format!(
                        "{}/{}",
                        parent.namespace.as_deref().unwrap_or(&self.namespace),
                        parent.name
                    )
                    .into();
                    binds.extend(hosts.iter().map(|host| Bind::ParentRoute {
                        gateway: gateway.clone(),
                        section: parent.section_name.as_deref().map(Text::from),
                        port: parent.port,
                        host: host.clone(),
                    }));
                }
            }
        }
        binds
    }

    /// Stable first: the order in which versions' children are built, applied and reported.
    pub fn versions(&self) -> Vec<&Version> {
        std::iter::once(&self.stable)
            .chain(self.canary.as_ref())
            .collect()
    }
}

/// One version, with defaults resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Version {
    pub role: Role,
    pub name: String,
    pub model: String,
    pub image: String,
    /// Shared config merged with the version's own, plus the model variable.
    pub config: BTreeMap<String, String>,
    pub resources: Option<Resources>,
    /// `None` when an HPA owns the replica count.
    pub replicas: Option<i32>,
    /// Name of the version's ConfigMap, Deployment and HPA.
    pub object_name: String,
}

impl Version {
    /// What a rollout is about: a hash of what the version runs (image, model, config, resources),
    /// so any change to them is a new revision to roll out, and its name or replica count is not.
    pub fn revision(&self) -> String {
        use sha2::{Digest, Sha256};
        let text = format!(
            "{}\n{}\n{:?}\n{:?}",
            self.image, self.model, self.config, self.resources
        );
        let digest = Sha256::digest(text.as_bytes());
        digest[..5].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A container's compute resources exactly as the user wrote them. Quantities stay text ("500m",
/// "0.5", "1Gi"): the operator passes them on and never computes with them, and a normalized
/// form would differ from what earlier versions of the operator wrote, making it rewrite every
/// Deployment. An empty map is kept apart from an absent one for the same reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub limits: Option<BTreeMap<String, String>>,
    pub requests: Option<BTreeMap<String, String>>,
    pub claims: Option<Vec<Claim>>,
}

/// A dynamic resource claim the container uses: the claim's name in the pod, and optionally one
/// request of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub name: String,
    pub request: Option<String>,
}

/// Autoscaling bounds, the same for each version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Autoscaling {
    pub min_replicas: i32,
    pub max_replicas: i32,
    /// Average CPU utilization aimed for, in percent of the CPU requested.
    pub target_cpu_utilization_percentage: i32,
}

/// Who routes the release's traffic.
#[derive(Clone, Debug, PartialEq)]
pub enum Traffic {
    /// A DestinationRule names each version as a subset, a VirtualService splits between them:
    /// for requests through `gateway` when there is one, and for calls inside the mesh when `mesh`.
    Istio {
        gateway: Option<Ingress>,
        mesh: bool,
    },
    /// A Service per version, and an HTTPRoute splitting between them.
    GatewayApi(GatewayApiSettings),
}

/// The Gateway API's side of a release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayApiSettings {
    pub parent_refs: Vec<ParentRef>,
    pub hostnames: Vec<String>,
}

/// A Gateway, or one listener of it, by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentRef {
    pub name: String,
    pub namespace: Option<String>,
    pub section_name: Option<String>,
    pub port: Option<i32>,
}

/// What carries a conversation's version between requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stickiness {
    /// A cookie the split's answers set, kept `max_age` seconds (a session cookie when `None`).
    Cookie { name: String, max_age: Option<u64> },
    /// A response header the split's answers carry, which the client sends back.
    Header { name: String },
}

/// Where traffic enters for the Istio provider: through a Gateway the operator creates for the
/// release, or through existing ones.
#[derive(Clone, Debug, PartialEq)]
pub enum Ingress {
    Create {
        selector: BTreeMap<String, String>,
        port: i32,
        hosts: Vec<String>,
    },
    Existing {
        gateways: Vec<String>,
        hosts: Vec<String>,
    },
}

impl Ingress {
    pub fn hosts(&self) -> &[String] {
        match self {
            Ingress::Create { hosts, .. } | Ingress::Existing { hosts, .. } => hosts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The component label of every version's objects and pods comes from here: a changed value
    /// would relabel, and so rewrite, every child of every release.
    #[test]
    fn roles_label_their_objects_as_before() {
        let cases = [(Role::Stable, "stable"), (Role::Canary, "canary")];
        for (role, label) in cases {
            assert_eq!(role.as_str(), label, "{role:?}");
        }
    }

    fn version(role: Role, name: &str) -> Version {
        Version {
            role,
            name: name.to_owned(),
            model: format!("model-{name}"),
            image: "repo/app:1".to_owned(),
            config: BTreeMap::new(),
            resources: None,
            replicas: Some(1),
            object_name: format!("chat-{name}"),
        }
    }

    fn release(gateway: Ingress) -> Validated {
        Validated {
            name: "chat".to_owned(),
            namespace: "lab".to_owned(),
            uid: "u-1".to_owned(),
            port: 5000,
            secret_name: None,
            stable: version(Role::Stable, "v1"),
            canary: Some(version(Role::Canary, "v2")),
            strategy: Strategy::Manual { canary_weight: 10 },
            autoscaling: None,
            traffic: Traffic::Istio {
                gateway: Some(gateway),
                mesh: false,
            },
            stickiness: None,
            host: "chat.lab.svc.cluster.local".to_owned(),
        }
    }

    /// Each case: an edit of the canary, and whether it is a new revision.
    #[test]
    fn revisions_change_with_what_runs() {
        type Edit = fn(&mut Version);
        let cases: [(&str, Edit, bool); 6] = [
            ("nothing", |_| {}, false),
            ("image", |v| v.image = "repo/app:2".to_owned(), true),
            ("model", |v| v.model = "gpt-5".to_owned(), true),
            (
                "config",
                |v| {
                    v.config.insert("TEMPERATURE".to_owned(), "0.2".to_owned());
                },
                true,
            ),
            (
                "resources",
                |v| v.resources = Some(Resources::default()),
                true,
            ),
            ("replicas", |v| v.replicas = Some(3), false),
        ];
        let before = version(Role::Canary, "v2").revision();
        assert_eq!(before.len(), 10);
        for (what, edit, changes) in cases {
            let mut v = version(Role::Canary, "v2");
            edit(&mut v);
            assert_eq!(v.revision() != before, changes, "{what}");
        }
    }

    #[test]
    fn versions_come_stable_first() {
        let v = release(Ingress::Existing {
            gateways: vec!["gw".to_owned()],
            hosts: vec!["*".to_owned()],
        });
        let roles: Vec<(Role, &str)> = v
            .versions()
            .iter()
            .map(|ver| (ver.role, ver.name.as_str()))
            .collect();
        assert_eq!(roles, [(Role::Stable, "v1"), (Role::Canary, "v2")]);
    }

    /// Each case: how the release is routed, and what it claims.
    #[test]
    fn releases_claim_their_hosts_where_they_route() {
        let route = |gateway: &str, host: &str| Bind::Route {
            gateway: gateway.into(),
            host: host.into(),
        };
        let created = release(Ingress::Create {
            selector: BTreeMap::from([("istio".to_owned(), "ingress".to_owned())]),
            port: 8080,
            hosts: vec!["Chat.Example.com".to_owned()],
        });
        let existing = release(Ingress::Existing {
            gateways: vec!["public".to_owned(), "istio-ingress/shared".to_owned()],
            hosts: vec!["*".to_owned()],
        });
        let mut mesh = existing.clone();
        mesh.traffic = Traffic::Istio {
            gateway: None,
            mesh: true,
        };
        let mut gateway_api = existing.clone();
        gateway_api.traffic = Traffic::GatewayApi(GatewayApiSettings {
            parent_refs: vec![ParentRef {
                name: "shared".to_owned(),
                namespace: Some("gw".to_owned()),
                section_name: Some("http".to_owned()),
                port: None,
            }],
            hostnames: vec![],
        });
        let cases = [
            (
                "a created Gateway: its server and the route through it",
                created,
                vec![
                    Bind::Listener {
                        gateway: "lab/chat".into(),
                        selector: "istio=ingress".into(),
                        port: 8080,
                        host: "chat.example.com".into(),
                    },
                    route("lab/chat", "chat.example.com"),
                ],
            ),
            (
                "existing Gateways, relative to the release's namespace",
                existing,
                vec![route("lab/public", "*"), route("istio-ingress/shared", "*")],
            ),
            (
                "the mesh: the Service's host",
                mesh,
                vec![Bind::MeshRoute {
                    host: "chat.lab.svc.cluster.local".into(),
                }],
            ),
            (
                "the Gateway API without host names: every host",
                gateway_api,
                vec![Bind::ParentRoute {
                    gateway: "gw/shared".into(),
                    section: Some("http".into()),
                    port: None,
                    host: "*".into(),
                }],
            ),
        ];
        for (what, v, expected) in cases {
            assert_eq!(v.binds(), expected, "{what}");
        }
    }

    /// Each case: what the gateway is, the gateway, and the hosts the route accepts.
    #[test]
    fn hosts_whichever_gateway() {
        let hosts = |names: &[&str]| names.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>();
        let cases = [
            (
                "created",
                Ingress::Create {
                    selector: BTreeMap::from([("istio".to_owned(), "ingress".to_owned())]),
                    port: 80,
                    hosts: hosts(&["chat.example.com"]),
                },
                hosts(&["chat.example.com"]),
            ),
            (
                "existing",
                Ingress::Existing {
                    gateways: hosts(&["istio-ingress/public"]),
                    hosts: hosts(&["*", "*.example.com"]),
                },
                hosts(&["*", "*.example.com"]),
            ),
        ];
        for (what, gateway, expected) in cases {
            assert_eq!(gateway.hosts(), expected, "{what}");
        }
    }
}
