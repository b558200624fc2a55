//! The Kubernetes API at layer 7 (in progress): what a request asks for ([`request`]) and how
//! a refusal is answered ([`status`]), in the API server's own terms. Until the handler that
//! terminates TLS and relays requests lands, Kubernetes resources are relayed as TCP.

pub mod request;
pub mod status;
