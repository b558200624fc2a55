//! cgroup v2 management for the workloads enforcer creates.

use std::{
    fs::File,
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};

use super::RedirectError;

/// Where cgroup v2 is mounted: /sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified on
/// hybrid ones (like these CI machines).
pub fn find_cgroup2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|p| is_cgroup2(p))
}

fn is_cgroup2(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC)
}

pub fn check_cgroup2(path: &Path) -> Result<(), RedirectError> {
    if !path.is_dir() {
        return Err(RedirectError::Cgroup {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such cgroup directory"),
        });
    }
    if is_cgroup2(path) {
        Ok(())
    } else {
        Err(RedirectError::NotCgroup2 {
            path: path.to_owned(),
        })
    }
}

/// A cgroup enforcer created for one `enforcer run`; removed (processes killed first) on drop.
#[derive(Debug)]
pub struct WorkloadCgroup {
    path: PathBuf,
}

impl WorkloadCgroup {
    /// Creates `<root>/enforcer/<name>`.
    pub fn create(root: &Path, name: &str) -> Result<WorkloadCgroup, RedirectError> {
        check_cgroup2(root)?;
        let parent = root.join("enforcer");
        let path = parent.join(name);
        let err = |source| RedirectError::Cgroup {
            path: path.clone(),
            source,
        };
        // Another run's teardown removes the shared parent when it looks empty: if it did so
        // between our two mkdirs, make it again.
        let mut attempts = 0;
        loop {
            std::fs::create_dir_all(&parent).map_err(err)?;
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(WorkloadCgroup { path }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 10 => {
                    attempts += 1;
                }
                Err(e) => return Err(err(e)),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An open `cgroup.procs`, for a child to move itself in between fork and exec.
    pub fn procs_file(&self) -> Result<File, RedirectError> {
        let path = self.path.join("cgroup.procs");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|source| RedirectError::Cgroup { path, source })
    }

    /// Pids still in the cgroup.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Kills whatever is left (daemonized grandchildren included) and removes the cgroup.
    pub fn remove(&self) -> Result<(), RedirectError> {
        let err = |source| RedirectError::Cgroup {
            path: self.path.clone(),
            source,
        };
        if !self.path.exists() {
            return Ok(());
        }
        for _ in 0..200 {
            if self.pids().is_empty() {
                break;
            }
            // cgroup.kill (5.14+) kills every process atomically, forks included.
            let killed = File::options()
                .write(true)
                .open(self.path.join("cgroup.kill"))
                .and_then(|mut f| f.write_all(b"1"));
            if killed.is_err() {
                for pid in self.pids() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::remove_dir(&self.path).map_err(err)?;
        // The shared parent goes too once the last workload is gone; busy means another run.
        if let Some(parent) = self.path.parent() {
            let _ = std::fs::remove_dir(parent);
        }
        Ok(())
    }
}

impl Drop for WorkloadCgroup {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            tracing::warn!("cannot remove workload cgroup: {e}");
        }
    }
}
