//! enforcer: a host-level enforcement sidecar that puts just-in-time access control between AI
//! agents and the infrastructure they touch.
//!
//! The request path reads top to bottom: [`redirect`] (kernel programs send every connection of
//! the workload to the proxy) → [`proxy`] (accept, original destination, route) → [`policy`]
//! (what is allowed) → [`protocol`] (speak the resource's protocol) → [`record`] (enforcement
//! log and hash-chained audit). [`admin`] and [`metrics`] are for the people who run it;
//! [`workload`] starts and supervises an enforced command.

pub mod admin;
pub mod approval;
pub mod grant;
pub mod identity;
pub mod mask;
pub mod metrics;
pub mod policy;
pub mod protocol;
pub mod proxy;
pub mod record;
pub mod redirect;
pub mod service;
pub mod store;
pub mod tls;
pub mod workload;
