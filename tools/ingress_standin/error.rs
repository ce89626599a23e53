//! What goes wrong, and how the stand-in says so: everything but the `applied` and `load` lines
//! goes to stderr, each line under the stand-in's name, and every module's failure is one [`Error`].

use std::path::PathBuf;

/// How the process names itself in its log lines.
pub(crate) const NAME: &str = "ingress gateway stand-in";

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("cannot build an HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {}: {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("nginx {0}")]
    Nginx(String),
    #[error("cannot handle signals: {0}")]
    Signal(std::io::Error),
    #[error("xdsroutes (following istiod at {0}) exited: {1}")]
    XdsEnded(String, String),
}
