//! What a Kubernetes API request asks for, read from its method, path and query the way the
//! API server's own request-info resolver reads them (verb, group, version, resource,
//! subresource, namespace, name), so a policy decides on what the server will do.
//!
//! Written here because no maintained crate parses API-server request paths; the rules
//! follow `k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`. Paths the server would
//! read differently from a plain split (percent-escapes, empty or dot segments) are refused
//! rather than guessed at.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`,
    /// `proxy`; for non-resource paths the lower-cased method.
    pub verb: String,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `/api/...` or `/apis/...` naming a resource.
    Resource {
        /// `""` for the core group.
        group: String,
        version: String,
        resource: String,
        subresource: String,
        /// `""` for cluster-scoped requests.
        namespace: String,
        /// `""` for collections.
        name: String,
    },
    /// Discovery, `/version`, `/healthz`, `/openapi/...` and anything else.
    NonResource { path: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the path {0:?} is not in canonical form (escapes, empty or dot segments)")]
    Path(String),
    #[error("unable to determine kind and namespace from the path {0:?}")]
    Incomplete(String),
    #[error("the method {0} is not part of the Kubernetes API")]
    Method(String),
}

/// The access level a request needs, in the terms grants use (`read` < `write` < `exec` <
/// `admin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Read,
    Write,
    Exec,
    Admin,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Exec => "exec",
            Access::Admin => "admin",
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Subresources that open a stream into a container or node.
const CONNECT: [&str; 3] = ["exec", "attach", "portforward"];
/// Resources whose change grants powers: identities, tokens and RBAC.
const POWER: [&str; 6] = [
    "serviceaccounts",
    "roles",
    "rolebindings",
    "clusterroles",
    "clusterrolebindings",
    "certificatesigningrequests",
];

/// Whether a query asks for a watch, as the API server reads it
/// (`Convert_Slice_string_To_bool`): only the first `watch` counts, and anything but `0` and
/// `false` (any case) is true, the empty value too. Read any other way, `?watch=yes` would
/// be decided as a list and served as a watch.
fn watches(params: &[(std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)]) -> bool {
    params
        .iter()
        .find(|(k, _)| k == "watch")
        .is_some_and(|(_, v)| !(v == "0" || v.eq_ignore_ascii_case("false")))
}

/// Paths outside `/api` and `/apis` that only describe the server; any other (`/logs`,
/// `/debug/pprof`, `/metrics`, whatever an aggregated server adds) is not a read.
fn describes_the_server(path: &str) -> bool {
    const EXACT: &[&str] = &[
        "/", "/api", "/apis", "/version", "/healthz", "/livez", "/readyz",
    ];
    const UNDER: &[&str] = &[
        "/api/",
        "/apis/",
        "/openapi/",
        "/healthz/",
        "/livez/",
        "/readyz/",
        "/.well-known/openid-configuration",
        "/openid/v1/jwks",
    ];
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    EXACT.contains(&path)
        || UNDER
            .iter()
            .any(|u| path.starts_with(u) || path == u.trim_end_matches('/'))
}

/// Reads one request. `query` is the raw query string (without `?`).
pub fn parse(method: &str, path: &str, query: Option<&str>) -> Result<ApiRequest, RequestError> {
    let method_verb = match method {
        "GET" | "HEAD" => "get",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        "OPTIONS" => "options",
        other => return Err(RequestError::Method(other.to_owned())),
    };
    let trimmed = path.trim_matches('/');
    let parts: Vec<&str> = if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    };
    if !path.starts_with('/')
        || path.contains('%')
        || path.contains('\\')
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == ".." || p.chars().any(char::is_control))
    {
        return Err(RequestError::Path(path.to_owned()));
    }
    let non_resource = || ApiRequest {
        verb: method.to_ascii_lowercase(),
        kind: Kind::NonResource {
            path: path.to_owned(),
        },
    };
    if parts.len() < 3 || !matches!(parts[0], "api" | "apis") {
        return Ok(non_resource());
    }
    let mut rest = &parts[1..];
    let group = if parts[0] == "apis" {
        if rest.len() < 3 {
            return Ok(non_resource());
        }
        let g = rest[0];
        rest = &rest[1..];
        g
    } else {
        ""
    };
    let version = rest[0];
    rest = &rest[1..];
    let mut verb = method_verb.to_owned();
    if matches!(rest.first(), Some(&("proxy" | "watch"))) {
        if rest.len() < 2 {
            return Err(RequestError::Incomplete(path.to_owned()));
        }
        verb = rest[0].to_owned();
        rest = &rest[1..];
    }
    let mut namespace = "";
    if rest.first() == Some(&"namespaces")
        && let Some(ns) = rest.get(1)
    {
        namespace = ns;
        // `/namespaces/{ns}/{resource}/…`; but `status` and `finalize` are the namespace's own.
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest = &rest[2..];
        }
    }
    let resource = rest.first().copied().unwrap_or_default();
    let mut name = rest.get(1).copied().unwrap_or_default().to_owned();
    let subresource = if verb != "proxy" {
        rest.get(2).copied().unwrap_or_default()
    } else {
        ""
    };
    if name.is_empty() && verb == "get" {
        let params = query
            .map(|q| form_urlencoded::parse(q.as_bytes()).collect::<Vec<_>>())
            .unwrap_or_default();
        verb = if watches(&params) { "watch" } else { "list" }.to_owned();
        // A list narrowed to one object by its name is about that object.
        if let Some((_, selector)) = params.iter().find(|(k, _)| k == "fieldSelector") {
            for term in selector.split(',') {
                let term = term.trim();
                let value = term
                    .strip_prefix("metadata.name==")
                    .or_else(|| term.strip_prefix("metadata.name="));
                if let Some(v) = value {
                    name = v.to_owned();
                }
            }
        }
    }
    if name.is_empty() && verb == "delete" {
        verb = "deletecollection".to_owned();
    }
    // A stream into a container is opened with GET over WebSocket or POST over SPDY; the API
    // server authorizes both as `create` (pods/exec), and so does enforcer.
    if verb == "get" && CONNECT.contains(&subresource) {
        verb = "create".to_owned();
    }
    Ok(ApiRequest {
        verb,
        kind: Kind::Resource {
            group: group.to_owned(),
            version: version.to_owned(),
            resource: resource.to_owned(),
            subresource: subresource.to_owned(),
            namespace: namespace.to_owned(),
            name,
        },
    })
}

impl ApiRequest {
    /// The access level the request needs: reading is `read`, changing is `write`, streams
    /// into containers (and proxying to them) are `exec`, and anything touching Secrets
    /// (their values are credentials), identities, tokens or RBAC is `admin`, as is any path
    /// outside the API that does not just describe the server.
    pub fn access(&self) -> Access {
        let (resource, subresource) = match &self.kind {
            Kind::Resource {
                resource,
                subresource,
                ..
            } => (resource, subresource),
            // Discovery, version and health only describe the server. Anything else outside
            // the API (`/logs` serves the server's own logs, audit logs with Secret bodies
            // among them; `/debug/pprof`) is read with the injected credential's power.
            Kind::NonResource { path } => {
                return match self.verb.as_str() {
                    "get" | "head" | "options" if describes_the_server(path) => Access::Read,
                    _ => Access::Admin,
                };
            }
        };
        let reading = matches!(self.verb.as_str(), "get" | "list" | "watch");
        // A proxied GET reaches whatever the node, pod or service serves (the kubelet's pod
        // list with its environment, any in-cluster HTTP endpoint): not a read of the API.
        if CONNECT.contains(&subresource.as_str()) || self.verb == "proxy" || subresource == "proxy"
        {
            return Access::Exec;
        }
        if subresource == "token" || POWER.contains(&resource.as_str()) && !reading {
            return Access::Admin;
        }
        // Writing a Secret is no less: a JSON patch can copy a value where no redaction
        // looks, or make the server's error quote it.
        if resource == "secrets" {
            return Access::Admin;
        }
        if self.verb == "create" && is_review(resource) {
            // `kubectl auth can-i` (a SelfSubjectAccessReview) is answered by enforcer from
            // its own policy. Every other review would be answered by the cluster about the
            // injected credential: its rules (`can-i --list`), its identity (`auth whoami`),
            // whether some token is valid. That is an oracle on the real credential.
            return if self.is_can_i() {
                Access::Read
            } else {
                Access::Admin
            };
        }
        if reading { Access::Read } else { Access::Write }
    }
}

impl ApiRequest {
    /// `kubectl auth can-i`: a SelfSubjectAccessReview, which enforcer answers itself.
    pub fn is_can_i(&self) -> bool {
        self.verb == "create"
            && matches!(&self.kind, Kind::Resource { group, resource, .. }
                if group == "authorization.k8s.io" && resource == "selfsubjectaccessreviews")
    }
}

/// Reviews are POSTs that only ask a question.
fn is_review(resource: &str) -> bool {
    matches!(
        resource,
        "selfsubjectaccessreviews"
            | "selfsubjectrulesreviews"
            | "selfsubjectreviews"
            | "subjectaccessreviews"
            | "localsubjectaccessreviews"
            | "tokenreviews"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(req: &ApiRequest) -> (&str, &str, &str, &str, &str, &str) {
        match &req.kind {
            Kind::Resource {
                group,
                resource,
                subresource,
                namespace,
                name,
                ..
            } => (
                req.verb.as_str(),
                group.as_str(),
                resource.as_str(),
                subresource.as_str(),
                namespace.as_str(),
                name.as_str(),
            ),
            Kind::NonResource { .. } => panic!("not a resource request: {req:?}"),
        }
    }

    #[test]
    fn requests_read_as_the_api_server_reads_them() {
        let r = |m, p, q| parse(m, p, q).expect("parses");
        assert_eq!(
            resource(&r("GET", "/api/v1/namespaces/default/pods", None)),
            ("list", "", "pods", "", "default", "")
        );
        assert_eq!(
            resource(&r(
                "GET",
                "/api/v1/namespaces/default/pods",
                Some("watch=1")
            )),
            ("watch", "", "pods", "", "default", "")
        );
        assert_eq!(
            resource(&r(
                "GET",
                "/api/v1/namespaces/default/secrets",
                Some("fieldSelector=metadata.name%3Ddb-creds&watch=true")
            )),
            ("watch", "", "secrets", "", "default", "db-creds")
        );
        // `watch` as the server reads it: the first one, true unless 0 or false.
        for (query, verb) in [
            ("watch=yes", "watch"),
            ("watch=", "watch"),
            ("watch", "watch"),
            ("watch=TRUE", "watch"),
            ("watch=1&watch=0", "watch"),
            ("watch=0&watch=1", "list"),
            ("watch=False", "list"),
            ("watches=1", "list"),
        ] {
            assert_eq!(r("GET", "/api/v1/pods", Some(query)).verb, verb, "{query}");
        }
        assert_eq!(
            resource(&r(
                "GET",
                "/api/v1/namespaces/default/secrets/db-creds",
                None
            )),
            ("get", "", "secrets", "", "default", "db-creds")
        );
        assert_eq!(
            resource(&r(
                "DELETE",
                "/apis/apps/v1/namespaces/prod/deployments/web",
                None
            )),
            ("delete", "apps", "deployments", "", "prod", "web")
        );
        assert_eq!(
            resource(&r(
                "DELETE",
                "/apis/apps/v1/namespaces/prod/deployments",
                None
            )),
            ("deletecollection", "apps", "deployments", "", "prod", "")
        );
        assert_eq!(
            resource(&r(
                "POST",
                "/api/v1/namespaces/default/pods/web-0/exec",
                Some("command=ls")
            )),
            ("create", "", "pods", "exec", "default", "web-0")
        );
        assert_eq!(
            resource(&r(
                "GET",
                "/api/v1/namespaces/default/pods/web-0/portforward",
                Some("ports=80")
            )),
            ("create", "", "pods", "portforward", "default", "web-0")
        );
        assert_eq!(
            resource(&r("GET", "/api/v1/namespaces/default", None)),
            ("get", "", "namespaces", "", "default", "default")
        );
        assert_eq!(
            resource(&r("PUT", "/api/v1/namespaces/default/finalize", None)),
            ("update", "", "namespaces", "finalize", "default", "default")
        );
        assert_eq!(
            resource(&r("GET", "/api/v1/nodes/n1/proxy/metrics", None)),
            ("get", "", "nodes", "proxy", "", "n1")
        );
        assert_eq!(
            resource(&r(
                "GET",
                "/api/v1/proxy/namespaces/default/pods/web-0",
                None
            )),
            ("proxy", "", "pods", "", "default", "web-0")
        );
        assert_eq!(
            resource(&r("GET", "/api/v1/watch/namespaces/default/pods", None)),
            ("watch", "", "pods", "", "default", "")
        );
        assert_eq!(
            resource(&r(
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                None
            )),
            (
                "create",
                "authorization.k8s.io",
                "selfsubjectaccessreviews",
                "",
                "",
                ""
            )
        );
        // The subresources that are not streams: read and written as their parent is.
        assert_eq!(
            resource(&r(
                "GET",
                "/api/v1/namespaces/default/pods/web-0/log",
                Some("container=web&follow=true")
            )),
            ("get", "", "pods", "log", "default", "web-0")
        );
        assert_eq!(
            resource(&r(
                "PATCH",
                "/apis/apps/v1/namespaces/default/deployments/web/scale",
                None
            )),
            ("patch", "apps", "deployments", "scale", "default", "web")
        );
        assert_eq!(
            resource(&r(
                "PUT",
                "/apis/apps/v1/namespaces/default/deployments/web/status",
                None
            )),
            ("update", "apps", "deployments", "status", "default", "web")
        );
        assert_eq!(
            resource(&r(
                "POST",
                "/api/v1/namespaces/default/pods/web-0/eviction",
                None
            )),
            ("create", "", "pods", "eviction", "default", "web-0")
        );
        assert_eq!(
            resource(&r(
                "POST",
                "/api/v1/namespaces/default/serviceaccounts/ci-bot/token",
                None
            )),
            (
                "create",
                "",
                "serviceaccounts",
                "token",
                "default",
                "ci-bot"
            )
        );
        for discovery in [
            "/api",
            "/apis",
            "/api/v1",
            "/apis/apps/v1",
            "/version",
            "/openapi/v3",
            "/",
        ] {
            assert!(
                matches!(r("GET", discovery, None).kind, Kind::NonResource { .. }),
                "{discovery}"
            );
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for path in [
            "/api/v1/namespaces/default/secrets%2Fx",
            "/api/v1//namespaces/default/pods",
            "/api/v1/namespaces/../secrets",
            "/api/v1/namespaces/./pods",
            "api/v1/pods",
        ] {
            assert!(
                matches!(parse("GET", path, None), Err(RequestError::Path(_))),
                "{path}"
            );
        }
        assert!(matches!(
            parse("GET", "/api/v1/watch", None),
            Err(RequestError::Incomplete(_))
        ));
        assert!(matches!(
            parse("TRACE", "/api", None),
            Err(RequestError::Method(_))
        ));
    }

    #[test]
    fn access_levels_follow_what_the_request_can_do() {
        let access = |m, p| parse(m, p, None).expect("parses").access();
        assert_eq!(access("GET", "/api/v1/namespaces/d/pods"), Access::Read);
        assert_eq!(
            access("GET", "/api/v1/namespaces/d/secrets/x"),
            Access::Admin
        );
        assert_eq!(
            access("PATCH", "/apis/apps/v1/namespaces/d/deployments/w"),
            Access::Write
        );
        assert_eq!(
            access("POST", "/api/v1/namespaces/d/pods/p/exec"),
            Access::Exec
        );
        assert_eq!(
            access("GET", "/api/v1/namespaces/d/pods/p/exec"),
            Access::Exec
        );
        for proxied in [
            "/api/v1/nodes/n1/proxy/pods",
            "/api/v1/namespaces/d/pods/p/proxy/metrics",
            "/api/v1/namespaces/d/services/s:80/proxy/",
        ] {
            assert_eq!(access("GET", proxied), Access::Exec, "{proxied}");
        }
        assert_eq!(
            access("POST", "/api/v1/namespaces/d/serviceaccounts"),
            Access::Admin
        );
        assert_eq!(
            access("GET", "/api/v1/namespaces/d/serviceaccounts"),
            Access::Read
        );
        assert_eq!(
            access("POST", "/api/v1/namespaces/d/serviceaccounts/sa/token"),
            Access::Admin
        );
        assert_eq!(
            access(
                "PUT",
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/admin"
            ),
            Access::Admin
        );
        assert_eq!(
            access(
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
            ),
            Access::Read
        );
        assert_eq!(access("GET", "/version"), Access::Read);
        for describing in [
            "/",
            "/api",
            "/apis/apps/v1",
            "/openapi/v3/apis/apps/v1",
            "/healthz",
            "/readyz/etcd",
            "/.well-known/openid-configuration",
        ] {
            assert_eq!(access("GET", describing), Access::Read, "{describing}");
        }
        for beyond in [
            "/logs/kube-apiserver.log",
            "/logs",
            "/debug/pprof/heap",
            "/metrics",
            "/healthzz",
        ] {
            assert_eq!(access("GET", beyond), Access::Admin, "{beyond}");
        }
        assert_eq!(access("POST", "/version"), Access::Admin);
        for oracle in [
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            "/apis/authorization.k8s.io/v1/namespaces/d/localsubjectaccessreviews",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            // a look-alike in another group is not answered locally either
            "/apis/example.com/v1/selfsubjectaccessreviews",
        ] {
            assert_eq!(access("POST", oracle), Access::Admin, "{oracle}");
        }
        for secret_write in [
            ("PATCH", "/api/v1/namespaces/d/secrets/x"),
            ("POST", "/api/v1/namespaces/d/secrets"),
            ("PUT", "/api/v1/namespaces/d/secrets/x"),
            ("DELETE", "/api/v1/namespaces/d/secrets/x"),
        ] {
            assert_eq!(
                access(secret_write.0, secret_write.1),
                Access::Admin,
                "{secret_write:?}"
            );
        }
        assert_eq!(
            access("GET", "/api/v1/namespaces/d/pods/p/log"),
            Access::Read
        );
        for changing in [
            ("PATCH", "/apis/apps/v1/namespaces/d/deployments/w/scale"),
            ("PUT", "/apis/apps/v1/namespaces/d/deployments/w/status"),
            ("POST", "/api/v1/namespaces/d/pods/p/eviction"),
        ] {
            assert_eq!(
                access(changing.0, changing.1),
                Access::Write,
                "{changing:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_request_line_parses_or_is_refused(
            method in proptest::sample::select(vec!["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "BREW"]),
            path in "(/[a-z0-9.%-]{0,12}){0,8}/?",
            query in proptest::option::of("[a-z=&%0-9.]{0,30}"),
        ) {
            if let Ok(req) = parse(method, &path, query.as_deref()) {
                let _ = req.access();
            }
        }
    }
}
