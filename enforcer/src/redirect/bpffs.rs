//! The BPF file system that holds enforcer's pins.

use std::path::Path;

use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

use super::RedirectError;

pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf";

/// Makes sure `path` is a bpffs mount, mounting one there if it is an empty directory that is
/// not (as systemd would at boot on most distributions).
pub fn ensure_mounted(path: &Path) -> Result<(), RedirectError> {
    let is_bpffs = |p: &Path| statfs(p).map(|s| s.filesystem_type() == BPF_FS_MAGIC);
    match is_bpffs(path) {
        Ok(true) => return Ok(()),
        Ok(false) => {}
        Err(e) => {
            return Err(RedirectError::Bpffs(format!(
                "cannot stat {}: {e}",
                path.display()
            )));
        }
    }
    mount(Some("bpf"), path, Some("bpf"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None::<&str>)
        .map_err(|e| {
            RedirectError::Bpffs(format!(
                "{} is not a bpffs and mounting one there failed: {e} (mount it with `mount -t bpf bpf {}`)",
                path.display(),
                path.display()
            ))
        })?;
    Ok(())
}
