//! Authorization with Cedar: the `*.cedar` files of a policy directory, validated against the
//! schema enforcer ships ([`SCHEMA`]), decide grant requests and (with the protocol handlers)
//! single operations. Obligations ride on the permitting policies as annotations:
//! `@approval("required")` and `@max_ttl("15m")`. Policies are named by `@id("…")`, or by
//! `file:line` when they have none, and those names appear in every decision.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    path::Path,
    str::FromStr,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicyId, PolicySet, Request, RestrictedExpression, Schema, ValidationMode,
    Validator,
};
use miette::Diagnostic as _;

use super::{Diagnostic, Resource};

/// The Cedar schema every policy is validated against.
pub const SCHEMA: &str = include_str!("enforcer.cedarschema");

/// Annotations enforcer reads, with the values each takes.
const APPROVAL: &str = "approval";
const MAX_TTL: &str = "max_ttl";

fn schema() -> &'static Schema {
    static PARSED: OnceLock<Schema> = OnceLock::new();
    PARSED.get_or_init(|| {
        // The schema is part of the binary and checked by a unit test: failing here is a
        // build defect, not bad input.
        #[allow(clippy::expect_used)]
        Schema::from_cedarschema_str(SCHEMA)
            .map(|(schema, _warnings)| schema)
            .expect("the shipped Cedar schema parses")
    })
}

/// Who asks: the workload principal as Cedar sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principal {
    /// `local` or `<provider>:<subject>`.
    pub name: String,
    pub provider: String,
    pub subject: String,
    /// Identity claims, as entity tags.
    pub tags: BTreeMap<String, String>,
}

impl Principal {
    pub fn local() -> Principal {
        Principal {
            name: crate::identity::LOCAL_PRINCIPAL.into(),
            ..Default::default()
        }
    }

    /// The principal a grant token names (`<provider>:<subject>` or `local`); the identity's
    /// other claims are not in the token, so policies see none of its tags.
    pub fn named(name: &str) -> Principal {
        match name.split_once(':') {
            Some((provider, subject)) => Principal {
                name: name.to_owned(),
                provider: provider.to_owned(),
                subject: subject.to_owned(),
                tags: BTreeMap::new(),
            },
            None if name == crate::identity::LOCAL_PRINCIPAL => Principal::local(),
            None => Principal {
                name: name.to_owned(),
                ..Default::default()
            },
        }
    }

    pub fn of(identity: Option<&crate::identity::WorkloadIdentity>) -> Principal {
        match identity {
            None => Principal::local(),
            Some(i) => Principal {
                name: i.principal(),
                provider: i.provider.clone(),
                subject: i.subject.clone(),
                tags: i.attributes.clone(),
            },
        }
    }
}

/// The outcome of one authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Ids of the policies that decided: the permits that allowed, or the forbids that
    /// denied. Empty for a denial because nothing permits.
    pub policies: Vec<String>,
    /// A permitting policy carries `@approval("required")`.
    pub approval_required: bool,
    /// The smallest `@max_ttl` of the permitting policies.
    pub max_ttl: Option<Duration>,
    /// Policies that failed to evaluate (they are skipped, as Cedar does).
    pub errors: Vec<String>,
}

impl Decision {
    /// Why, in one phrase naming the deciding policies.
    pub fn explain(&self) -> String {
        if !self.errors.is_empty() {
            return format!(
                "denied because a policy failed to evaluate: {}",
                self.errors.join("; ")
            );
        }
        match (self.allowed, self.policies.is_empty()) {
            (true, _) => format!("permitted by {}", self.policies.join(", ")),
            (false, true) => "no policy permits it".into(),
            (false, false) => format!("forbidden by {}", self.policies.join(", ")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    #[error("the request does not fit the schema: {0}")]
    Request(String),
    #[error("cannot build the entities: {0}")]
    Entities(String),
}

/// The validated Cedar policies of one policy directory.
#[derive(Clone)]
pub struct Authz {
    policies: PolicySet,
    /// Per policy id: (file, line) and the obligations it carries.
    info: BTreeMap<String, PolicyInfo>,
    /// Entities already built, by (principal, resource): building them is most of the cost
    /// of a decision, and an enforcer decides for the same few again and again.
    entities: Arc<Mutex<EntityCache>>,
    /// What of a context any policy reads (decisions are remembered by it).
    pub(super) reads: Arc<ContextReads>,
    /// Decisions already taken for contexts enforcer built ([`Authz::decide_trusted`]), by
    /// (principal, resource, action, what the policies read of the context). A decision is a
    /// pure function of those (the principal's tags are checked equal on a hit): Cedar has no
    /// clock or randomness, and a policy set never changes once loaded.
    pub(super) decisions: Arc<Mutex<DecisionCache>>,
}

type EntityCache = HashMap<(String, String), (Principal, String, Arc<Entities>)>;
pub(super) type DecisionCache = HashMap<String, (Principal, Decision)>;
/// Decisions kept before the cache starts over.
const DECISION_CACHE: usize = 4096;

/// The context attributes the policies read, from their syntax trees.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct ContextReads {
    /// Read by name (`context.tables`, `context has grant`).
    pub(super) attributes: std::collections::BTreeSet<String>,
    /// Some policy uses the context as a whole value, or the trees could not be read:
    /// every attribute counts.
    pub(super) whole: bool,
}

impl ContextReads {
    fn of(policies: &PolicySet) -> ContextReads {
        let mut reads = ContextReads::default();
        for policy in policies.policies() {
            match policy.to_json() {
                Ok(tree) => reads.walk(&tree),
                Err(_) => reads.whole = true,
            }
        }
        reads
    }

    fn is_context(v: &serde_json::Value) -> bool {
        v.get("Var").and_then(serde_json::Value::as_str) == Some("context")
    }

    /// In Cedar's JSON policy format `context.x` is `{".": {"left": {"Var": "context"},
    /// "attr": "x"}}` and `context has x` the same under `"has"`; any other `{"Var":
    /// "context"}` is the context used whole.
    fn walk(&mut self, v: &serde_json::Value) {
        match v {
            serde_json::Value::Object(fields) => {
                if Self::is_context(v) {
                    self.whole = true;
                    return;
                }
                for (key, inner) in fields {
                    if (key == "." || key == "has")
                        && let Some(left) = inner.get("left")
                        && Self::is_context(left)
                    {
                        match inner.get("attr").and_then(serde_json::Value::as_str) {
                            Some(attr) => {
                                self.attributes.insert(attr.to_owned());
                            }
                            None => self.whole = true,
                        }
                        continue;
                    }
                    self.walk(inner);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| self.walk(i)),
            _ => {}
        }
    }

    /// The part of `context` a decision depends on, as a cache key; `None` when that is the
    /// statement or request text itself, which makes every decision new (not worth keeping).
    pub(super) fn key(&self, context: &serde_json::Value) -> Option<String> {
        if self.whole {
            return None;
        }
        let mut key = String::new();
        for attr in &self.attributes {
            if let Some(value) = context.get(attr) {
                if attr == "statement" || attr == "path" {
                    return None;
                }
                key.push_str(attr);
                key.push('=');
                key.push_str(&value.to_string());
                key.push('\u{1f}');
            }
        }
        Some(key)
    }
}
/// Entries kept before the cache starts over (bounded memory, whatever the callers).
const ENTITY_CACHE: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
struct PolicyInfo {
    location: String,
    approval_required: bool,
    max_ttl: Option<Duration>,
}

impl Default for Authz {
    fn default() -> Self {
        Authz {
            policies: PolicySet::new(),
            info: BTreeMap::new(),
            entities: Arc::default(),
            reads: Arc::default(),
            decisions: Arc::default(),
        }
    }
}

impl fmt::Debug for Authz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authz")
            .field("policies", &self.info.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PartialEq for Authz {
    fn eq(&self, other: &Self) -> bool {
        self.info == other.info && self.policies.to_string() == other.policies.to_string()
    }
}

impl Eq for Authz {}

/// Collects Cedar files, then validates them together.
#[derive(Default)]
pub(super) struct CedarLoader {
    policies: Vec<cedar_policy::Policy>,
    info: BTreeMap<String, PolicyInfo>,
    /// policy id → (file, text) for positions of validation errors.
    sources: BTreeMap<String, (std::path::PathBuf, std::sync::Arc<str>)>,
    diagnostics: Vec<Diagnostic>,
}

impl CedarLoader {
    pub(super) fn file(&mut self, path: &Path, text: &str) {
        let text: std::sync::Arc<str> = text.into();
        let parsed = match PolicySet::from_str(&text) {
            Ok(set) => set,
            Err(errors) => {
                for e in errors.iter() {
                    let offset = e
                        .labels()
                        .and_then(|mut labels| labels.next())
                        .map_or(0, |l| l.offset());
                    self.error(path, &text, offset, e.to_string());
                }
                return;
            }
        };
        if parsed.templates().next().is_some() {
            self.error(
                path,
                &text,
                0,
                "policy templates (?principal, ?resource) are not supported".into(),
            );
        }
        for policy in parsed.policies() {
            let core: &cedar_policy_core::ast::Policy = policy.as_ref();
            let offset = core.loc().map_or(0, |l| l.start());
            let (line, _) = line_col(&text, offset);
            let location = format!("{}:{line}", path.display());
            let id = match policy.annotation("id") {
                Some(id) if !id.trim().is_empty() => id.trim().to_owned(),
                Some(_) => {
                    self.error(path, &text, offset, "@id must not be empty".into());
                    continue;
                }
                None => location.clone(),
            };
            if let Some(first) = self.info.get(&id) {
                let message = format!(
                    "duplicate policy id {id:?}: already used at {}",
                    first.location
                );
                self.error(path, &text, offset, message);
                continue;
            }
            let approval_required = match policy.annotation(APPROVAL) {
                None | Some("none") => false,
                Some("required") => true,
                Some(other) => {
                    self.error(
                        path,
                        &text,
                        annotation_offset(core, APPROVAL).unwrap_or(offset),
                        format!(
                            "@approval({other:?}) is not understood; use @approval(\"required\")"
                        ),
                    );
                    false
                }
            };
            let max_ttl = match policy.annotation(MAX_TTL) {
                None => None,
                Some(text_ttl) => {
                    match humantime::parse_duration(text_ttl) {
                        Ok(d) if !d.is_zero() => Some(d),
                        _ => {
                            self.error(
                            path,
                            &text,
                            annotation_offset(core, MAX_TTL).unwrap_or(offset),
                            format!("@max_ttl({text_ttl:?}) is not a duration like \"15m\" or \"2h\""),
                        );
                            None
                        }
                    }
                }
            };
            for (key, _) in policy.annotations() {
                if !matches!(key, "id" | APPROVAL | MAX_TTL | "description" | "mask") {
                    self.error(
                        path,
                        &text,
                        annotation_offset(core, key).unwrap_or(offset),
                        format!(
                            "unknown annotation @{key}; enforcer reads @id, @approval, @max_ttl, @mask and @description"
                        ),
                    );
                }
            }
            self.info.insert(
                id.clone(),
                PolicyInfo {
                    location,
                    approval_required,
                    max_ttl,
                },
            );
            self.sources
                .insert(id.clone(), (path.to_owned(), std::sync::Arc::clone(&text)));
            self.policies.push(policy.new_id(PolicyId::new(&id)));
        }
    }

    fn error(&mut self, path: &Path, text: &str, offset: usize, message: String) {
        let (line, column) = line_col(text, offset);
        self.diagnostics.push(Diagnostic {
            file: path.to_owned(),
            line,
            column,
            message,
        });
    }

    /// Validates everything loaded against the schema and against the YAML resources.
    pub(super) fn finish(self, resources: &[Resource]) -> (Option<Authz>, Vec<Diagnostic>) {
        let mut this = self;
        let authz = this.validate(resources);
        (authz, this.diagnostics)
    }

    fn validate(&mut self, resources: &[Resource]) -> Option<Authz> {
        let policies = match PolicySet::from_policies(std::mem::take(&mut self.policies)) {
            Ok(set) => set,
            Err(e) => {
                self.diagnostics.push(Diagnostic {
                    file: "<cedar>".into(),
                    line: 1,
                    column: 1,
                    message: e.to_string(),
                });
                return None;
            }
        };
        let result = Validator::new(schema().clone()).validate(&policies, ValidationMode::Strict);
        for e in result.validation_errors() {
            let id = e.policy_id().to_string();
            let offset = e
                .labels()
                .and_then(|mut labels| labels.next())
                .map_or(0, |l| l.offset());
            let message = match e.help() {
                Some(help) => format!("{e} ({help})"),
                None => e.to_string(),
            };
            match self.sources.get(&id).cloned() {
                Some((path, text)) => self.error(&path, &text, offset, message),
                None => self.diagnostics.push(Diagnostic {
                    file: "<cedar>".into(),
                    line: 1,
                    column: 1,
                    message,
                }),
            }
        }
        // A policy naming a resource the YAML does not define can never match: a typo.
        for policy in policies.policies() {
            let named = match policy.resource_constraint() {
                cedar_policy::ResourceConstraint::Eq(uid)
                | cedar_policy::ResourceConstraint::In(uid) => Some(uid),
                _ => None,
            };
            let Some(uid) = named else { continue };
            let name = uid.id().unescaped();
            if uid.type_name().to_string() == "Enforcer::Resource"
                && !resources.iter().any(|r| r.name == name)
            {
                let id = policy.id().to_string();
                if let Some((path, text)) = self.sources.get(&id).cloned() {
                    let core: &cedar_policy_core::ast::Policy = policy.as_ref();
                    let offset = core.loc().map_or(0, |l| l.start());
                    let at = text[offset..]
                        .find(&format!("\"{name}\""))
                        .map_or(offset, |i| offset + i);
                    self.error(
                        &path,
                        &text,
                        at,
                        format!("resource {name:?} is not defined in the policy's YAML"),
                    );
                }
            }
        }
        if self.diagnostics.is_empty() {
            Some(Authz {
                reads: Arc::new(ContextReads::of(&policies)),
                policies,
                info: std::mem::take(&mut self.info),
                entities: Arc::default(),
                decisions: Arc::default(),
            })
        } else {
            None
        }
    }
}

fn annotation_offset(policy: &cedar_policy_core::ast::Policy, key: &str) -> Option<usize> {
    let id = cedar_policy_core::ast::AnyId::from_str(key).ok()?;
    policy.annotation(&id)?.loc.as_ref().map(|l| l.start())
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (u64, u64) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() as u64 + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64 + 1;
    (line, column)
}

/// A context enforcer built itself, converted directly: Cedar's JSON reader tries several
/// interpretations of every value (entity references, extension calls) and was the largest
/// cost of a decision.
fn trusted_context(context: serde_json::Value) -> Result<Context, AuthzError> {
    fn value(v: serde_json::Value) -> Result<RestrictedExpression, AuthzError> {
        Ok(match v {
            serde_json::Value::String(s) => RestrictedExpression::new_string(s),
            serde_json::Value::Bool(b) => RestrictedExpression::new_bool(b),
            serde_json::Value::Number(n) => RestrictedExpression::new_long(
                n.as_i64()
                    .ok_or_else(|| AuthzError::Request(format!("{n} is not a Long")))?,
            ),
            serde_json::Value::Array(items) => RestrictedExpression::new_set(
                items
                    .into_iter()
                    .map(value)
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            serde_json::Value::Object(fields) => RestrictedExpression::new_record(
                fields
                    .into_iter()
                    .map(|(k, v)| Ok((k, value(v)?)))
                    .collect::<Result<Vec<_>, AuthzError>>()?,
            )
            .map_err(|e| AuthzError::Request(e.to_string()))?,
            serde_json::Value::Null => {
                return Err(AuthzError::Request("null has no Cedar value".into()));
            }
        })
    }
    let serde_json::Value::Object(fields) = context else {
        return Err(AuthzError::Request("the context is not an object".into()));
    };
    let pairs = fields
        .into_iter()
        .map(|(k, v)| Ok((k, value(v)?)))
        .collect::<Result<Vec<_>, AuthzError>>()?;
    Context::from_pairs(pairs).map_err(|e| AuthzError::Request(e.to_string()))
}

fn uid(type_name: &str, id: &str) -> Result<EntityUid, AuthzError> {
    // Parsed once per type: a decision names three entities, and parsing a type name costs
    // as much as evaluating a simple policy.
    static TYPES: OnceLock<Mutex<HashMap<String, EntityTypeName>>> = OnceLock::new();
    let types = TYPES.get_or_init(Mutex::default);
    let known = match types.lock() {
        Ok(t) => t.get(type_name).cloned(),
        Err(p) => p.into_inner().get(type_name).cloned(),
    };
    let t = match known {
        Some(t) => t,
        None => {
            let t = EntityTypeName::from_str(type_name)
                .map_err(|e| AuthzError::Entities(format!("{type_name}: {e}")))?;
            match types.lock() {
                Ok(mut m) => m.insert(type_name.to_owned(), t.clone()),
                Err(p) => p.into_inner().insert(type_name.to_owned(), t.clone()),
            };
            t
        }
    };
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

/// The entity uid of an action such as `grant:request`.
pub fn action(name: &str) -> Result<EntityUid, AuthzError> {
    uid("Enforcer::Action", name)
}

/// The uid of an action the schema declares, looked up rather than parsed and searched for.
fn declared_action(name: &str) -> Option<EntityUid> {
    static DECLARED: OnceLock<HashMap<String, EntityUid>> = OnceLock::new();
    DECLARED
        .get_or_init(|| {
            schema()
                .actions()
                .map(|a| (a.id().unescaped().to_owned(), a.clone()))
                .collect()
        })
        .get(name)
        .cloned()
}

impl Authz {
    /// How many policies are loaded.
    pub fn len(&self) -> usize {
        self.info.len()
    }

    pub fn is_empty(&self) -> bool {
        self.info.is_empty()
    }

    /// Decides `action` by `principal` on `resource` with a JSON `context` object that must
    /// fit the action's context type in the schema (checked: the context may come from a
    /// person, as in `enforcer policy explain`).
    pub fn decide(
        &self,
        principal: &Principal,
        action_name: &str,
        resource: &Resource,
        context: serde_json::Value,
    ) -> Result<Decision, AuthzError> {
        self.decide_with(principal, action_name, resource, context, true)
    }

    /// [`decide`] for contexts enforcer builds itself, which fit the schema by construction
    /// (and the policies were validated against it at load): skips re-validating the
    /// request and entities, which is most of the cost of a decision.
    pub fn decide_trusted(
        &self,
        principal: &Principal,
        action_name: &str,
        resource: &Resource,
        context: serde_json::Value,
    ) -> Result<Decision, AuthzError> {
        let Some(read) = self.reads.key(&context) else {
            return self.decide_with(principal, action_name, resource, context, false);
        };
        let key = format!(
            "{}\u{0}{}\u{0}{}\u{0}{action_name}\u{0}{read}",
            principal.name,
            resource.name,
            resource.protocol.as_str()
        );
        fn lock(m: &Mutex<DecisionCache>) -> std::sync::MutexGuard<'_, DecisionCache> {
            match m.lock() {
                Ok(c) => c,
                Err(p) => p.into_inner(),
            }
        }
        if let Some((p, decision)) = lock(&self.decisions).get(&key)
            && p == principal
        {
            return Ok(decision.clone());
        }
        let decision = self.decide_with(principal, action_name, resource, context, false)?;
        let mut cache = lock(&self.decisions);
        if cache.len() >= DECISION_CACHE {
            cache.clear();
        }
        cache.insert(key, (principal.clone(), decision.clone()));
        Ok(decision)
    }

    pub(super) fn decide_with(
        &self,
        principal: &Principal,
        action_name: &str,
        resource: &Resource,
        context: serde_json::Value,
        validate: bool,
    ) -> Result<Decision, AuthzError> {
        let schema = schema();
        let action_uid = declared_action(action_name)
            .ok_or_else(|| AuthzError::UnknownAction(action_name.to_owned()))?;
        let principal_uid = uid("Enforcer::Workload", &principal.name)?;
        let resource_uid = uid("Enforcer::Resource", &resource.name)?;
        let entities = self.entities(principal, resource, validate)?;
        let checked = validate.then_some(schema);
        let context = if validate {
            Context::from_json_value(context, Some((schema, &action_uid)))
                .map_err(|e| AuthzError::Request(e.to_string()))?
        } else {
            trusted_context(context)?
        };
        let request = Request::new(principal_uid, action_uid, resource_uid, context, checked)
            .map_err(|e| AuthzError::Request(e.to_string()))?;
        let response = Authorizer::new().is_authorized(&request, &self.policies, entities.as_ref());
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(ToString::to_string)
            .collect();
        // Cedar skips a policy that fails to evaluate; a forbid that failed must not turn
        // into a permit, so any evaluation error denies.
        let allowed = response.decision() == CedarDecision::Allow && errors.is_empty();
        let mut policies: Vec<String> = response
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        policies.sort();
        let mut approval_required = false;
        let mut max_ttl: Option<Duration> = None;
        if allowed {
            for id in &policies {
                if let Some(info) = self.info.get(id) {
                    approval_required |= info.approval_required;
                    if let Some(ttl) = info.max_ttl {
                        max_ttl = Some(max_ttl.map_or(ttl, |m| m.min(ttl)));
                    }
                }
            }
        }
        Ok(Decision {
            allowed,
            policies,
            approval_required,
            max_ttl,
            errors,
        })
    }

    fn entities(
        &self,
        principal: &Principal,
        resource: &Resource,
        validate: bool,
    ) -> Result<Arc<Entities>, AuthzError> {
        let key = (principal.name.clone(), resource.name.clone());
        let protocol = resource.protocol.as_str();
        if !validate {
            let cache = match self.entities.lock() {
                Ok(c) => c,
                Err(p) => p.into_inner(),
            };
            if let Some((p, proto, entities)) = cache.get(&key)
                && p == principal
                && proto == protocol
            {
                return Ok(Arc::clone(entities));
            }
        }
        let workload = Entity::new_with_tags(
            uid("Enforcer::Workload", &principal.name)?,
            [
                (
                    "principal".to_owned(),
                    RestrictedExpression::new_string(principal.name.clone()),
                ),
                (
                    "provider".to_owned(),
                    RestrictedExpression::new_string(principal.provider.clone()),
                ),
                (
                    "subject".to_owned(),
                    RestrictedExpression::new_string(principal.subject.clone()),
                ),
            ],
            [],
            principal
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone()))),
        )
        .map_err(|e| AuthzError::Entities(e.to_string()))?;
        let target = Entity::new_with_tags(
            uid("Enforcer::Resource", &resource.name)?,
            [(
                "protocol".to_owned(),
                RestrictedExpression::new_string(protocol.to_owned()),
            )],
            [],
            [],
        )
        .map_err(|e| AuthzError::Entities(e.to_string()))?;
        let entities = Arc::new(
            Entities::from_entities([workload, target], validate.then_some(schema()))
                .map_err(|e| AuthzError::Entities(e.to_string()))?,
        );
        let mut cache = match self.entities.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        if cache.len() >= ENTITY_CACHE {
            cache.clear();
        }
        cache.insert(
            key,
            (
                principal.clone(),
                protocol.to_owned(),
                Arc::clone(&entities),
            ),
        );
        Ok(entities)
    }

    /// Where a policy is written (`file:line`).
    pub fn location(&self, id: &str) -> Option<&str> {
        self.info.get(id).map(|i| i.location.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_schema_parses() {
        let (_schema, warnings) =
            Schema::from_cedarschema_str(SCHEMA).expect("shipped schema parses");
        assert_eq!(warnings.count(), 0);
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 99), (1, 3));
    }
}
