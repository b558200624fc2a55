//! JIT grants: short-lived, scoped to one resource and one access level, bound to the workload
//! that asked. This module holds what exists so far: the signed-token form of a grant
//! ([`token`]), which any enforcer sharing the signing key can verify and which a client
//! outside a cgroup can present as a password or bearer token. Requesting, approving,
//! storing, expiring and revoking grants come with the rest of the grants issue.

pub mod token;

pub use token::{GrantClaims, GrantError, GrantSigner};
