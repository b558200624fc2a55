use std::{path::PathBuf, process::ExitCode};

use clap::Subcommand;
use enforcer::policy::{Policy, PolicyError};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy directory; prints every error as FILE:LINE:COL: MESSAGE and exits 1.
    Check {
        /// The policy directory.
        dir: PathBuf,
    },
    /// Show how the Cedar policies decide one request, and which policies decided it.
    ///
    /// Example: enforcer policy explain policies/ --principal ci:repo:acme/shop \
    ///   --attr repository=acme/shop --action grant:request --resource orders-db \
    ///   --context '{"access": "write"}'
    #[command(verbatim_doc_comment)]
    Explain {
        /// The policy directory.
        dir: PathBuf,
        /// The workload principal: `local`, or `<identity provider>:<subject>`.
        #[arg(long, default_value = "local")]
        principal: String,
        /// An identity claim of the principal (a Cedar tag), repeatable.
        #[arg(long = "attr", value_name = "CLAIM=VALUE")]
        attrs: Vec<String>,
        /// grant:request, sql:read, sql:write, sql:ddl, sql:admin
        #[arg(long)]
        action: String,
        /// A resource name from the policy.
        #[arg(long)]
        resource: String,
        /// The request context as a JSON object; fields left out take neutral defaults
        /// (grant:request: access "read", ttl_secs 900, uses unlimited, reason "").
        #[arg(long, default_value = "{}")]
        context: String,
    },
}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Explain {
            dir,
            principal,
            attrs,
            action,
            resource,
            context,
        } => explain(&dir, principal, &attrs, &action, &resource, &context),
        PolicyCommand::Check { dir } => match Policy::load_dir(&dir) {
            Ok(policy) => {
                println!(
                    "{}: ok ({} resources, {} egress rules, {} identity providers, {} Cedar policies, DNS {})",
                    dir.display(),
                    policy.resources.len(),
                    policy.egress.len(),
                    policy.identity_providers.len(),
                    policy.authz.len(),
                    policy
                        .dns_resolver
                        .map_or_else(|| "denied".to_owned(), |r| format!("via {r}"))
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(PolicyError::Invalid(diagnostics)) => {
                for d in &diagnostics {
                    eprintln!("{d}");
                }
                eprintln!("{}: {} error(s)", dir.display(), diagnostics.len());
                Ok(ExitCode::from(1))
            }
            Err(other) => {
                eprintln!("{other}");
                Ok(ExitCode::from(1))
            }
        },
    }
}

fn explain(
    dir: &std::path::Path,
    principal: String,
    attrs: &[String],
    action: &str,
    resource: &str,
    context: &str,
) -> anyhow::Result<ExitCode> {
    use anyhow::{Context, bail};
    let policy =
        Policy::load_dir(dir).with_context(|| format!("policy {} is not valid", dir.display()))?;
    let Some(target) = policy.resources.iter().find(|r| r.name == resource) else {
        bail!(
            "no resource {resource:?} in {}; it has: {}",
            dir.display(),
            policy
                .resources
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let mut tags = std::collections::BTreeMap::new();
    for attr in attrs {
        let (k, v) = attr
            .split_once('=')
            .with_context(|| format!("--attr {attr:?} is not CLAIM=VALUE"))?;
        tags.insert(k.to_owned(), v.to_owned());
    }
    let (provider, subject) = principal
        .split_once(':')
        .map_or((String::new(), String::new()), |(p, s)| {
            (p.to_owned(), s.to_owned())
        });
    let who = enforcer::policy::Principal {
        name: principal,
        provider,
        subject,
        tags,
    };
    let mut ctx: serde_json::Value =
        serde_json::from_str(context).context("--context is not a JSON object")?;
    let Some(fields) = ctx.as_object_mut() else {
        bail!("--context is not a JSON object");
    };
    let defaults = match action {
        "grant:request" => {
            serde_json::json!({"access": "read", "ttl_secs": 900, "uses": i64::MAX, "reason": ""})
        }
        a if a.starts_with("sql:") => {
            serde_json::json!({"tables": [], "statement": "", "grant": ""})
        }
        _ => serde_json::json!({}),
    };
    if let Some(defaults) = defaults.as_object() {
        for (k, v) in defaults {
            fields.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let decision = policy.authz.decide(&who, action, target, ctx)?;
    println!(
        "decision: {}",
        if decision.allowed { "allow" } else { "deny" }
    );
    if decision.policies.is_empty() {
        println!("decided by: no policy matched (default deny)");
    } else {
        for id in &decision.policies {
            let at = policy.authz.location(id).unwrap_or("?");
            println!("decided by: {id} ({at})");
        }
    }
    let mut obligations = Vec::new();
    if decision.approval_required {
        obligations.push("approval required".to_owned());
    }
    if let Some(ttl) = decision.max_ttl {
        obligations.push(format!("max ttl {}", humantime::format_duration(ttl)));
    }
    if !obligations.is_empty() {
        println!("obligations: {}", obligations.join("; "));
    }
    for e in &decision.errors {
        println!("error: {e}");
    }
    Ok(if decision.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
