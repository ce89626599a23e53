//! Where the programs the stand-in runs are found when no flag names them: one PATH lookup for
//! both.

use std::path::PathBuf;

/// The program `name` in a directory of PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// `xdsroutes` from PATH (`hack/cluster.sh env` puts the cluster's tools there).
pub(crate) fn default_xdsroutes() -> PathBuf {
    on_path("xdsroutes").unwrap_or_else(|| PathBuf::from("xdsroutes"))
}

/// `nginx` from PATH, else Debian's, which installs it outside a user's PATH.
pub(crate) fn default_nginx() -> PathBuf {
    on_path("nginx").unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"))
}
