//! Starting the enforced command: inside the workload cgroup from its very first instruction,
//! as an unprivileged user (so no CAP_NET_RAW, no way to detach programs or leave the cgroup),
//! with no_new_privs (setuid binaries cannot win privileges back).

use std::{ffi::OsString, fs::File, os::fd::AsRawFd, process::ExitStatus};

use nix::unistd::{Gid, Uid, User};

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("no user named {0:?} on this host (give --user NAME or a numeric uid)")]
    UnknownUser(String),
    #[error("cannot look up user {name:?}: {source}")]
    UserLookup { name: String, source: nix::Error },
    #[error(
        "the workload must not run as root (uid 0): a root workload can detach enforcer's programs or leave its cgroup; pick an unprivileged --user"
    )]
    Root,
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        program: OsString,
        source: std::io::Error,
    },
}

/// The identity the workload runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: Uid,
    pub gid: Gid,
}

impl RunAs {
    /// A user name or numeric uid; root is refused.
    pub fn resolve(name: &str) -> Result<RunAs, WorkloadError> {
        let user = match name.parse::<u32>() {
            Ok(uid) => User::from_uid(Uid::from_raw(uid)),
            Err(_) => User::from_name(name),
        }
        .map_err(|source| WorkloadError::UserLookup {
            name: name.to_owned(),
            source,
        })?;
        let run_as = match user {
            Some(user) => RunAs {
                uid: user.uid,
                gid: user.gid,
            },
            // A numeric uid without a passwd entry is fine: give it the same gid.
            None => match name.parse::<u32>() {
                Ok(uid) => RunAs {
                    uid: Uid::from_raw(uid),
                    gid: Gid::from_raw(uid),
                },
                Err(_) => return Err(WorkloadError::UnknownUser(name.to_owned())),
            },
        };
        if run_as.uid.is_root() {
            return Err(WorkloadError::Root);
        }
        Ok(run_as)
    }
}

/// What to run and how.
pub struct Spawn<'a> {
    pub program: &'a OsString,
    pub args: &'a [OsString],
    pub run_as: RunAs,
    /// `cgroup.procs` of the workload cgroup, opened for writing.
    pub cgroup_procs: &'a File,
    /// Environment variables that hold real secrets (credential sources): never passed on.
    pub withheld_env: &'a [String],
    /// Set for the workload (after the withheld ones are removed).
    pub env: &'a [(String, String)],
}

impl Spawn<'_> {
    pub fn spawn(&self) -> Result<tokio::process::Child, WorkloadError> {
        let mut cmd = tokio::process::Command::new(self.program);
        cmd.args(self.args);
        for name in self.withheld_env {
            cmd.env_remove(name);
        }
        // The environment names the user the workload runs as, as su and sudo set it: root's
        // HOME would send its tools to files they cannot read (libpq's ~/.postgresql fails
        // the TLS connection with "permission denied", kubectl's cache cannot be written).
        let (home, user) = match User::from_uid(self.run_as.uid) {
            Ok(Some(u)) => (u.dir, u.name),
            _ => (std::path::PathBuf::from("/"), self.run_as.uid.to_string()),
        };
        cmd.env("HOME", home)
            .env("USER", &user)
            .env("LOGNAME", &user);
        for (name, value) in self.env {
            cmd.env(name, value);
        }
        let procs_fd = self.cgroup_procs.as_raw_fd();
        let uid = self.run_as.uid.as_raw();
        let gid = self.run_as.gid.as_raw();
        // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
        // libc functions on values captured by copy; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                // Join the cgroup before anything else runs, so the first connect is enforced.
                if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                let groups = [gid];
                if libc::setgroups(1, groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // A session of its own: enforcer's terminal is no longer the workload's
                // controlling terminal, so it cannot push keystrokes into the operator's shell
                // (TIOCSTI) or act on its job control. Reading stdin still works.
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn().map_err(|source| WorkloadError::Spawn {
            program: self.program.clone(),
            source,
        })
    }
}

/// The exit code a shell would report for `status`.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    }
}
