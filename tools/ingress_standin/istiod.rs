//! Following istiod: `xdsroutes` runs as this process's child, asking as the gateway's proxy, and
//! each route configuration it prints becomes a plan sent to whoever applies it. The edge where
//! istiod's pushes come in; what they mean is the plan's business.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::process::Command;

use crate::error::{Error, NAME};
use crate::plan::{Plan, Release};
use crate::push::Push;
use crate::upstream::Upstream;

/// A plan to apply, with what of it cannot be followed.
pub(crate) type Update = (Plan, Vec<String>);

/// How `xdsroutes` connects to istiod: as which gateway proxy, for which route configuration.
/// Unset fields are left to `xdsroutes`' defaults (the AKS external ingress gateway, `http.80`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Proxy {
    pub(crate) namespace: Option<String>,
    pub(crate) pod: Option<String>,
    pub(crate) labels: Vec<String>,
    pub(crate) route_config: Option<String>,
}

impl Proxy {
    /// `xdsroutes`' flags; also what the startup line shows of whom it asks as.
    pub(crate) fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let flags = [
            ("-namespace", &self.namespace),
            ("-pod", &self.pod),
            ("-route", &self.route_config),
        ];
        for (flag, value) in flags {
            if let Some(value) = value {
                args.extend([flag.to_owned(), value.clone()]);
            }
        }
        for label in &self.labels {
            args.extend(["-label".to_owned(), label.clone()]);
        }
        args
    }
}

/// What is followed: where istiod is and who asks, and what the answers are read for.
pub(crate) struct Source {
    pub(crate) xdsroutes: PathBuf,
    pub(crate) address: String,
    pub(crate) proxy: Proxy,
    pub(crate) host: String,
    pub(crate) release: Release,
    pub(crate) upstreams: Vec<Upstream>,
}

/// Follows istiod through `xdsroutes`, sending the plan of each route configuration it pushes.
pub(crate) async fn follow_istiod(source: Source, tx: tokio::sync::mpsc::Sender<Update>) -> Error {
    use tokio::io::AsyncBufReadExt;
    let Source {
        xdsroutes,
        address,
        proxy,
        host,
        release,
        upstreams,
    } = source;
    let mut child = match Command::new(&xdsroutes)
        .args(["-addr", &address])
        .args(proxy.args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(source) => {
            return Error::Spawn {
                binary: xdsroutes,
                source,
            };
        }
    };
    let Some(stdout) = child.stdout.take() else {
        return Error::XdsEnded(address, "its output is not piped".to_owned());
    };
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => match serde_json::from_str::<Push>(&line) {
                Ok(push) => {
                    let update = Plan::of_push(&push, &host, &release, &upstreams);
                    if tx.send(update).await.is_err() {
                        return Error::XdsEnded(address, "no longer read".to_owned());
                    }
                }
                Err(e) => eprintln!("{NAME}: unreadable line from xdsroutes ({e}): {line}"),
            },
            Ok(None) => break,
            Err(e) => return Error::XdsEnded(address, e.to_string()),
        }
    }
    let status = child
        .wait()
        .await
        .map_or_else(|e| e.to_string(), |s| s.to_string());
    Error::XdsEnded(address, status)
}
