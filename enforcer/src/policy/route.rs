//! Routing: which policy entry, if any, covers a connection's original destination.

use std::net::SocketAddr;

use super::{Policy, Resource, canonical_addr};

/// What the proxy does with a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// A named resource: handed to its protocol handler.
    Resource(Box<Resource>),
    /// An egress rule: relayed as TCP, recorded.
    Egress { rule: String },
    /// Closed at once, recorded with the reason.
    Deny { reason: String },
    /// enforcer's own admin API: served in-process, the caller identified as the workload.
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub target: RouteTarget,
}

impl Route {
    /// Kind of decision, as used in logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self.target {
            RouteTarget::Resource(_) => "resource",
            RouteTarget::Egress { .. } => "egress",
            RouteTarget::Deny { .. } => "deny",
            RouteTarget::Admin => "admin",
        }
    }

    /// Name of the resource or rule that decided, if any.
    pub fn rule(&self) -> Option<&str> {
        match &self.target {
            RouteTarget::Resource(r) => Some(&r.name),
            RouteTarget::Egress { rule } => Some(rule),
            RouteTarget::Deny { .. } | RouteTarget::Admin => None,
        }
    }
}

impl Policy {
    /// Resources first (they are specific; a resource's gateway routes to it too), then egress
    /// rules in file order; default deny.
    pub fn route(&self, dst: SocketAddr) -> Route {
        let dst = canonical_addr(dst);
        if let Some(resource) = self
            .resources
            .iter()
            .find(|r| r.addresses.contains(&dst) || r.gateway == Some(dst))
        {
            return Route {
                target: RouteTarget::Resource(Box::new(resource.clone())),
            };
        }
        if let Some(rule) = self.egress.iter().find(|rule| rule.matches(&dst)) {
            return Route {
                target: RouteTarget::Egress {
                    rule: rule.name.clone(),
                },
            };
        }
        Route {
            target: RouteTarget::Deny {
                reason: format!("no resource or egress rule allows {dst}"),
            },
        }
    }
}
