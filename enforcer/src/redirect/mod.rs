//! The kernel half of enforcement, seen from userspace: load enforcer's cgroup programs, attach
//! them to a workload cgroup, pin links and maps in bpffs so they outlive the daemon (fail
//! closed), find the original destination of a proxied connection, and detach.
//!
//! Pins live in `<bpffs>/enforcer/cg-<cgroup inode>/`: one directory per enforced cgroup, named
//! from the cgroup itself so that `enforcer detach --cgroup PATH` and a restarted daemon find it
//! without any other state.

mod bpffs;
pub mod cgroup;

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr, SockOps,
        links::FdLink,
    },
};
use enforcer_common::{CONFIG_DNS_ENABLED, Config, Counter, OrigDst, PROGRAMS, PeerKey, map_name};

pub use bpffs::DEFAULT_BPFFS;

/// The compiled kernel programs (built by build.rs from enforcer-ebpf).
static PROGRAM_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer"));

#[derive(Debug, thiserror::Error)]
pub enum RedirectError {
    #[error("cannot open cgroup {path}: {source} (is it a cgroup v2 directory?)")]
    Cgroup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not on a cgroup v2 file system")]
    NotCgroup2 { path: PathBuf },
    #[error("bpffs: {0}")]
    Bpffs(String),
    #[error(
        "cgroup {cgroup} is already enforced (pins in {pins}); run `enforcer detach --cgroup {cgroup}` first, or use the daemon to resume it"
    )]
    AlreadyAttached { cgroup: PathBuf, pins: PathBuf },
    #[error("cgroup {cgroup} is not enforced by enforcer (no pins in {pins})")]
    NotAttached { cgroup: PathBuf, pins: PathBuf },
    #[error("cannot load the eBPF programs: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("eBPF program {name}: cannot keep its link: {source}")]
    Link {
        name: &'static str,
        source: aya::programs::links::LinkError,
    },
    #[error("eBPF program {0} is missing from the object file")]
    MissingProgram(&'static str),
    #[error("cannot pin {path}: {source}")]
    Pin {
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("cannot remove pins in {path}: {source}")]
    Unpin {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The userspace handle on an enforced cgroup: its maps. Dropping it leaves the programs
/// attached (they are pinned); only [`detach`] removes them.
pub struct Redirect {
    pins: PathBuf,
    config: Array<MapData, Config>,
    peers: HashMap<MapData, PeerKey, OrigDst>,
    counters: PerCpuArray<MapData, u64>,
}

/// What the daemon tells the kernel programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedirectConfig {
    pub proxy_port: u16,
    pub dns_resolver: Option<SocketAddr>,
}

impl RedirectConfig {
    fn to_kernel(self) -> Config {
        let (dns_addr, dns_port, flags) = match self.dns_resolver {
            Some(addr) => (addr_words(addr.ip()), addr.port(), CONFIG_DNS_ENABLED),
            None => ([0; 4], 0, 0),
        };
        Config {
            proxy_port: self.proxy_port,
            dns_port,
            dns_addr,
            flags,
            _pad: 0,
        }
    }

    fn from_kernel(config: Config) -> Self {
        let dns_resolver = (config.flags & CONFIG_DNS_ENABLED != 0)
            .then(|| SocketAddr::new(words_addr(config.dns_addr), config.dns_port));
        RedirectConfig {
            proxy_port: config.proxy_port,
            dns_resolver,
        }
    }
}

/// Where the pins of `cgroup` live under `bpffs`.
pub fn pin_dir(bpffs: &Path, cgroup: &Path) -> Result<PathBuf, RedirectError> {
    let meta = std::fs::metadata(cgroup).map_err(|source| RedirectError::Cgroup {
        path: cgroup.to_owned(),
        source,
    })?;
    Ok(bpffs.join("enforcer").join(format!("cg-{}", meta.ino())))
}

/// Whether `cgroup` has enforcer's programs pinned.
pub fn is_attached(bpffs: &Path, cgroup: &Path) -> Result<bool, RedirectError> {
    Ok(pin_dir(bpffs, cgroup)?
        .join(link_file(PROGRAMS[0]))
        .exists())
}

fn link_file(program: &str) -> String {
    format!("link-{program}")
}

impl Redirect {
    /// Loads the programs, attaches them to `cgroup` and pins links and maps.
    pub fn attach(
        bpffs: &Path,
        cgroup: &Path,
        config: RedirectConfig,
    ) -> Result<Redirect, RedirectError> {
        cgroup::check_cgroup2(cgroup)?;
        bpffs::ensure_mounted(bpffs)?;
        let pins = pin_dir(bpffs, cgroup)?;
        if pins.join(link_file(PROGRAMS[0])).exists() {
            return Err(RedirectError::AlreadyAttached {
                cgroup: cgroup.to_owned(),
                pins,
            });
        }
        // Leftovers of an attach that failed half-way hold no links: clear them.
        remove_pins(&pins)?;
        std::fs::create_dir_all(&pins)
            .map_err(|e| RedirectError::Bpffs(format!("cannot create {}: {e}", pins.display())))?;
        match Self::load_and_attach(&pins, cgroup, config) {
            Ok(redirect) => Ok(redirect),
            Err(err) => {
                let _ = remove_pins(&pins);
                Err(err)
            }
        }
    }

    fn load_and_attach(
        pins: &Path,
        cgroup: &Path,
        config: RedirectConfig,
    ) -> Result<Redirect, RedirectError> {
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pins)
            .load(PROGRAM_OBJECT)?;
        // Config before attach: a program that ran without it would deny everything anyway, but
        // there is no reason to let the workload see that.
        {
            let map = ebpf.map_mut(map_name::CONFIG).ok_or(RedirectError::Map {
                name: "CONFIG",
                source: aya::maps::MapError::InvalidName {
                    name: map_name::CONFIG.into(),
                },
            })?;
            let mut array: Array<&mut MapData, Config> =
                Array::try_from(map).map_err(|source| RedirectError::Map {
                    name: "CONFIG",
                    source,
                })?;
            array
                .set(0, config.to_kernel(), 0)
                .map_err(|source| RedirectError::Map {
                    name: "CONFIG",
                    source,
                })?;
        }
        let cgroup_file = File::open(cgroup).map_err(|source| RedirectError::Cgroup {
            path: cgroup.to_owned(),
            source,
        })?;
        for &name in PROGRAMS {
            attach_one(&mut ebpf, name, &cgroup_file, pins)?;
        }
        drop(ebpf);
        Self::open(pins)
    }

    /// Opens the maps of a cgroup enforced earlier (a restarted daemon).
    pub fn resume(bpffs: &Path, cgroup: &Path) -> Result<Redirect, RedirectError> {
        let pins = pin_dir(bpffs, cgroup)?;
        if !pins.join(link_file(PROGRAMS[0])).exists() {
            return Err(RedirectError::NotAttached {
                cgroup: cgroup.to_owned(),
                pins,
            });
        }
        Self::open(&pins)
    }

    fn open(pins: &Path) -> Result<Redirect, RedirectError> {
        fn map(pins: &Path, name: &'static str) -> Result<Map, RedirectError> {
            let data = MapData::from_pin(pins.join(name))
                .map_err(|source| RedirectError::Map { name, source })?;
            Map::from_map_data(data).map_err(|source| RedirectError::Map { name, source })
        }
        let config =
            Array::try_from(map(pins, map_name::CONFIG)?).map_err(|source| RedirectError::Map {
                name: "CONFIG",
                source,
            })?;
        let peers = HashMap::try_from(map(pins, map_name::PEER_ORIG)?).map_err(|source| {
            RedirectError::Map {
                name: "PEER_ORIG",
                source,
            }
        })?;
        let counters = PerCpuArray::try_from(map(pins, map_name::COUNTERS)?).map_err(|source| {
            RedirectError::Map {
                name: "COUNTERS",
                source,
            }
        })?;
        Ok(Redirect {
            pins: pins.to_owned(),
            config,
            peers,
            counters,
        })
    }

    pub fn pins(&self) -> &Path {
        &self.pins
    }

    pub fn config(&self) -> Result<RedirectConfig, RedirectError> {
        self.config
            .get(&0, 0)
            .map(RedirectConfig::from_kernel)
            .map_err(|source| RedirectError::Map {
                name: "CONFIG",
                source,
            })
    }

    pub fn set_config(&mut self, config: RedirectConfig) -> Result<(), RedirectError> {
        self.config
            .set(0, config.to_kernel(), 0)
            .map_err(|source| RedirectError::Map {
                name: "CONFIG",
                source,
            })
    }

    /// Takes the kernel's record for a proxied connection whose client end is `peer`.
    /// The record is deleted so the map only holds connections not yet accepted.
    pub fn take_orig_dst(&mut self, peer: SocketAddr) -> Option<OrigDst> {
        let key = PeerKey {
            addr: addr_words(peer.ip()),
            port: u32::from(peer.port()),
        };
        let found = self.peers.get(&key, 0).ok()?;
        let _ = self.peers.remove(&key);
        Some(found)
    }

    /// The kernel counters, summed over CPUs.
    pub fn counters(&self) -> Vec<(Counter, u64)> {
        Counter::ALL
            .iter()
            .map(|&c| {
                let total = self
                    .counters
                    .get(&(c as u32), 0)
                    .map(|per_cpu| per_cpu.iter().sum())
                    .unwrap_or(0);
                (c, total)
            })
            .collect()
    }
}

fn attach_one(
    ebpf: &mut Ebpf,
    name: &'static str,
    cgroup: &File,
    pins: &Path,
) -> Result<(), RedirectError> {
    let program = ebpf
        .program_mut(name)
        .ok_or(RedirectError::MissingProgram(name))?;
    let prog_err = |source| RedirectError::Program { name, source };
    // bpf_link attachments always coexist with other programs on the cgroup (systemd's,
    // a container runtime's; a deny from any of them wins) and the kernel refuses the legacy
    // ALLOW_MULTI flag on them, so the "single" mode is the right one here.
    let mode = CgroupAttachMode::Single;
    let link: FdLink = if let Ok(p) = <&mut CgroupSockAddr>::try_from(&mut *program) {
        p.load().map_err(prog_err)?;
        let id = p.attach(cgroup, mode).map_err(prog_err)?;
        p.take_link(id)
            .map_err(prog_err)?
            .try_into()
            .map_err(|source| RedirectError::Link { name, source })?
    } else if let Ok(p) = <&mut SockOps>::try_from(&mut *program) {
        p.load().map_err(prog_err)?;
        let id = p.attach(cgroup, mode).map_err(prog_err)?;
        p.take_link(id)
            .map_err(prog_err)?
            .try_into()
            .map_err(|source| RedirectError::Link { name, source })?
    } else if let Ok(p) = <&mut CgroupSkb>::try_from(&mut *program) {
        p.load().map_err(prog_err)?;
        let id = p
            .attach(cgroup, CgroupSkbAttachType::Egress, mode)
            .map_err(prog_err)?;
        p.take_link(id)
            .map_err(prog_err)?
            .try_into()
            .map_err(|source| RedirectError::Link { name, source })?
    } else if let Ok(p) = <&mut CgroupSock>::try_from(&mut *program) {
        p.load().map_err(prog_err)?;
        let id = p.attach(cgroup, mode).map_err(prog_err)?;
        p.take_link(id)
            .map_err(prog_err)?
            .try_into()
            .map_err(|source| RedirectError::Link { name, source })?
    } else {
        return Err(RedirectError::MissingProgram(name));
    };
    let path = pins.join(link_file(name));
    link.pin(&path)
        .map_err(|source| RedirectError::Pin { path, source })?;
    Ok(())
}

/// Removes enforcement from `cgroup`: unpinning the links detaches the programs; the maps go
/// with their pins.
pub fn detach(bpffs: &Path, cgroup: &Path) -> Result<bool, RedirectError> {
    let pins = pin_dir(bpffs, cgroup)?;
    if !pins.exists() {
        return Ok(false);
    }
    remove_pins(&pins)?;
    Ok(true)
}

/// Removes by pin directory, for a cgroup that is already gone.
pub fn remove_pins(pins: &Path) -> Result<(), RedirectError> {
    let entries = match std::fs::read_dir(pins) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(RedirectError::Unpin {
                path: pins.to_owned(),
                source,
            });
        }
    };
    // Links first, so no program runs against a map that is being removed.
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort_by_key(|p| {
        !p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("link-"))
    });
    for path in paths {
        std::fs::remove_file(&path).map_err(|source| RedirectError::Unpin {
            path: path.clone(),
            source,
        })?;
    }
    std::fs::remove_dir(pins).map_err(|source| RedirectError::Unpin {
        path: pins.to_owned(),
        source,
    })?;
    // The shared `enforcer` directory goes with the last enforced cgroup; busy means others.
    if let Some(parent) = pins.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    Ok(())
}

/// 16-byte network-order form of an address (IPv4 v4-mapped), as the kernel programs keep it.
pub fn addr_words(ip: IpAddr) -> [u32; 4] {
    let v6 = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let o = v6.octets();
    std::array::from_fn(|i| {
        u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
    })
}

/// Inverse of [`addr_words`]; v4-mapped comes back as IPv4.
pub fn words_addr(words: [u32; 4]) -> IpAddr {
    let mut o = [0u8; 16];
    for (i, w) in words.iter().enumerate() {
        o[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
    }
    let v6 = Ipv6Addr::from(o);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

/// The original destination as a socket address.
pub fn orig_socket_addr(orig: &OrigDst) -> SocketAddr {
    SocketAddr::new(words_addr(orig.addr), orig.port)
}

/// The proxy's own listener addresses for `port`.
pub fn proxy_addrs(port: u16) -> [SocketAddr; 2] {
    [
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_words_round_trip() {
        for text in ["127.0.0.1", "10.1.2.3", "::1", "fe80::1", "2001:db8::42"] {
            let ip: IpAddr = text.parse().expect("ip");
            assert_eq!(words_addr(addr_words(ip)), ip);
        }
        let mapped = addr_words("127.0.0.1".parse().expect("ip"));
        assert_eq!(mapped, enforcer_common::v4_mapped(0x7f00_0001u32.to_be()));
    }
}
