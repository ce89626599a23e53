//! The names status gives its conditions, and the reasons a release is not in place: defined once,
//! for status to write and the plugin to read.

/// The release's split is in place and carried by its route.
pub const READY: &str = "Ready";
/// The versions, or an automatic rollout, are moving towards what the spec asks.
pub const PROGRESSING: &str = "Progressing";
/// Something stops the release from reaching what the spec asks.
pub const DEGRADED: &str = "Degraded";

/// The spec cannot be acted on; nothing was changed.
pub const INVALID_SPEC: &str = "InvalidSpec";
/// Objects with the release's children's names belong to someone else; nothing was changed.
pub const OWNERSHIP_CONFLICT: &str = "OwnershipConflict";
/// The API server refused an object built from the spec.
pub const REJECTED: &str = "Rejected";
/// Writing (or pruning) a child failed; retried.
pub const APPLY_FAILED: &str = "ApplyFailed";
/// Reading what a decision needs failed; retried.
pub const OBSERVE_FAILED: &str = "ObserveFailed";
/// The release's routes are withheld because an older claim overlaps its hosts.
pub const HOST_CONFLICT: &str = "HostConflict";

/// The reasons after which the operator will not touch the route until the user changes the
/// spec or removes what is in the way: waiting for them to pass by themselves is in vain.
pub const WAITING_FOR_THE_USER: [&str; 3] = [INVALID_SPEC, OWNERSHIP_CONFLICT, REJECTED];
