//! The kernel/user border of enforcer: the `#[repr(C)]` values the eBPF programs and the
//! userspace daemon both read. Nothing else crosses that border.
//!
//! Addresses are always stored as 16-byte IPv6 form (IPv4 as `::ffff:a.b.c.d`) in network byte
//! order, so one key type serves IPv4, IPv6 and v4-mapped sockets alike. Ports are host order.
#![no_std]

/// Name of every map the programs share with userspace, as pinned in bpffs.
pub mod map_name {
    /// `Config` at index 0 (array).
    pub const CONFIG: &str = "CONFIG";
    /// socket cookie → [`OrigDst`] (LRU hash), written by connect4/6, read by sock_ops and
    /// getpeername, deleted on sock_release.
    pub const SOCK_ORIG: &str = "SOCK_ORIG";
    /// [`PeerKey`] (client's source address) → [`OrigDst`] (LRU hash), written by sock_ops at
    /// TCP_CONNECT_CB, looked up and deleted by the proxy after accept().
    pub const PEER_ORIG: &str = "PEER_ORIG";
    /// per-CPU u64 counters indexed by [`Counter`].
    pub const COUNTERS: &str = "COUNTERS";
}

/// Names of the kernel programs, as in the object file and as pinned links.
pub const PROGRAMS: &[&str] = &[
    "connect4",
    "connect6",
    "sock_ops",
    "getpeername4",
    "getpeername6",
    "sendmsg4",
    "sendmsg6",
    "recvmsg4",
    "recvmsg6",
    "sock_create",
    "sock_release",
    "egress",
];

/// Capacity of the per-socket maps. LRU, so a daemon that is gone cannot make them fill up and
/// start refusing connections; 64 Ki in-flight connects is far above what one workload opens.
pub const MAX_TRACKED_SOCKETS: u32 = 65_536;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// `Config::flags` bit: a DNS resolver is configured; without it DNS is denied.
pub const CONFIG_DNS_ENABLED: u32 = 1;

/// Runtime settings the daemon writes for the kernel programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Proxy listener port (host order) on 127.0.0.1 and ::1.
    pub proxy_port: u16,
    /// Port of the DNS resolver that UDP/53 traffic goes to (host order).
    pub dns_port: u16,
    /// Resolver address in 16-byte form (IPv4 as v4-mapped), network order.
    pub dns_addr: [u32; 4],
    pub flags: u32,
    pub _pad: u32,
}

/// Where a workload socket wanted to go and who asked.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrigDst {
    /// 16-byte form, network order.
    pub addr: [u32; 4],
    /// Host order.
    pub port: u16,
    /// Address family the application used (AF_INET / AF_INET6; v4-mapped is AF_INET6 with a
    /// mapped address).
    pub family: u16,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// `ORIG_*` flags.
    pub flags: u32,
    pub cgroup_id: u64,
    pub comm: [u8; 16],
    /// bpf_ktime_get_ns() at TCP_CONNECT_CB (0 before re-keying).
    pub connect_ns: u64,
}

/// `OrigDst::flags`: when this connection was re-keyed, another one from the same client
/// address was still waiting to be accepted. The proxy cannot tell which record belongs to
/// which accepted socket, so it must refuse (both: the other one then finds no record).
pub const ORIG_AMBIGUOUS: u32 = 1;

/// A record older than this when a new connection re-uses its key is a leftover (its
/// connection never reached the proxy), not a rival.
pub const STALE_RECORD_NS: u64 = 10_000_000_000;

/// The client's end of a redirected TCP connection, as the proxy sees it in `peer_addr()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerKey {
    /// 16-byte form, network order.
    pub addr: [u32; 4],
    /// Host order, widened so the struct has no padding the kernel would hash.
    pub port: u32,
}

/// Counters kept per CPU by the kernel programs.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// TCP connect()s rewritten to the proxy.
    TcpRedirected = 0,
    /// UDP connect()/sendmsg() to port 53 sent to the policy's resolver.
    DnsRedirected = 1,
    /// DNS attempted with no resolver configured.
    DnsDenied = 2,
    /// UDP to any other port (connect or sendmsg).
    UdpDenied = 3,
    /// Sockets refused at creation (raw, ICMP, SCTP, MPTCP…).
    SocketDenied = 4,
    /// TCP_CONNECT_CB re-keyed a socket's record by its source address.
    Rekeyed = 5,
    /// TCP_CONNECT_CB found no record for the socket (should stay 0).
    RekeyMiss = 6,
    /// A map update failed, so the connect was refused (fail closed).
    MapFull = 7,
    /// getpeername()/recvmsg() answered with the original address.
    PeerRestored = 8,
    /// Two un-accepted connections shared a client address; both will be refused.
    Ambiguous = 9,
    /// A packet of the workload headed somewhere other than loopback or the resolver, or
    /// carrying IP options / IPv6 extension headers (source routing), was dropped.
    EgressDropped = 10,
}

pub const COUNTER_COUNT: u32 = 11;

impl Counter {
    pub const ALL: [Counter; COUNTER_COUNT as usize] = [
        Counter::TcpRedirected,
        Counter::DnsRedirected,
        Counter::DnsDenied,
        Counter::UdpDenied,
        Counter::SocketDenied,
        Counter::Rekeyed,
        Counter::RekeyMiss,
        Counter::MapFull,
        Counter::PeerRestored,
        Counter::Ambiguous,
        Counter::EgressDropped,
    ];

    /// Label used in metrics.
    pub const fn label(self) -> &'static str {
        match self {
            Counter::TcpRedirected => "tcp_redirected",
            Counter::DnsRedirected => "dns_redirected",
            Counter::DnsDenied => "dns_denied",
            Counter::UdpDenied => "udp_denied",
            Counter::SocketDenied => "socket_denied",
            Counter::Rekeyed => "rekeyed",
            Counter::RekeyMiss => "rekey_miss",
            Counter::MapFull => "map_full",
            Counter::PeerRestored => "peer_restored",
            Counter::Ambiguous => "ambiguous",
            Counter::EgressDropped => "egress_dropped",
        }
    }
}

/// `::ffff:0:0/96` prefix word (network order) used for v4-mapped addresses.
pub const V4_MAPPED_WORD: u32 = u32::from_be(0x0000_ffff);

/// IPv4 address (network order u32) in 16-byte form.
#[inline(always)]
pub const fn v4_mapped(ip4_be: u32) -> [u32; 4] {
    [0, 0, V4_MAPPED_WORD, ip4_be]
}

#[inline(always)]
pub const fn is_v4_mapped(addr: &[u32; 4]) -> bool {
    addr[0] == 0 && addr[1] == 0 && addr[2] == V4_MAPPED_WORD
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all four are #[repr(C)], Copy, and made only of integers with explicit padding
    // fields, so every bit pattern is valid and there are no uninitialised bytes.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::OrigDst {}
    unsafe impl aya::Pod for super::PeerKey {}
}
