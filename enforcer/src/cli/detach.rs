use std::{path::PathBuf, process::ExitCode};

use clap::Args;

/// Remove enforcer's programs from a cgroup (the only way enforcement ends).
#[derive(Debug, Args)]
pub struct DetachArgs {
    /// The enforced cgroup v2 directory.
    #[arg(long, value_name = "PATH")]
    cgroup: PathBuf,
    /// bpffs mount holding enforcer's pins.
    #[arg(long, value_name = "DIR", default_value = enforcer::redirect::DEFAULT_BPFFS)]
    bpffs: PathBuf,
}

pub fn run(args: DetachArgs) -> anyhow::Result<ExitCode> {
    if enforcer::redirect::detach(&args.bpffs, &args.cgroup)? {
        println!("detached enforcer from {}", args.cgroup.display());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "{} is not enforced by enforcer (nothing pinned for it under {})",
            args.cgroup.display(),
            args.bpffs.display()
        );
        Ok(ExitCode::from(1))
    }
}
