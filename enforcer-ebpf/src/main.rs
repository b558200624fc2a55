//! enforcer's kernel side. Attached to the workload's cgroup v2, these programs make sure every
//! network flow of every process in it goes where the daemon can decide about it:
//!
//! * TCP connects (IPv4, IPv6, v4-mapped, TCP Fast Open) are rewritten to the proxy listener, after
//!   recording the original destination and the calling process by socket cookie;
//! * sock_ops re-keys that record by the client's source address at TCP_CONNECT_CB (before the
//!   SYN leaves), so the proxy finds it from `peer_addr()` right after accept();
//! * UDP is allowed only to port 53 and is then sent to the policy's resolver; replies and
//!   getpeername() are given back the original address so clients that check it are content;
//! * raw, ICMP and other unusual sockets cannot be created.
//!
//! Every error path denies: a connect that cannot be recorded is refused, never let through.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_SOCK_OPS_TCP_CONNECT_CB, bpf_sock, bpf_sock_addr},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_skb_load_bytes,
        },
    },
    macros::{cgroup_skb, cgroup_sock, cgroup_sock_addr, map, sock_ops},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::{SkBuffContext, SockAddrContext, SockContext, SockOpsContext},
};
use core::{ffi::c_void, ptr};
use enforcer_common::{
    AF_INET, AF_INET6, CONFIG_DNS_ENABLED, COUNTER_COUNT, Config, Counter, MAX_TRACKED_SOCKETS,
    ORIG_AMBIGUOUS, OrigDst, PeerKey, STALE_RECORD_NS, is_v4_mapped, v4_mapped,
};

const ALLOW: i32 = 1;
const DENY: i32 = 0;

const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
const DNS_PORT: u16 = 53;

/// 127.0.0.1 in network order.
const LOOPBACK4: u32 = 0x7f00_0001u32.to_be();
/// ::1 in network order.
const LOOPBACK6: [u32; 4] = [0, 0, 0, 1u32.to_be()];

#[map(name = "CONFIG")]
static CONFIG: Array<Config> = Array::pinned(1, 0);

#[map(name = "SOCK_ORIG")]
static SOCK_ORIG: LruHashMap<u64, OrigDst> = LruHashMap::pinned(MAX_TRACKED_SOCKETS, 0);

#[map(name = "PEER_ORIG")]
static PEER_ORIG: LruHashMap<PeerKey, OrigDst> = LruHashMap::pinned(MAX_TRACKED_SOCKETS, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(COUNTER_COUNT, 0);

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: a per-CPU slot is only touched by this CPU while the program runs.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn config() -> Option<Config> {
    CONFIG.get(0).copied()
}

/// The socket and the destination address it asked for, read once each (merged context reads
/// can be rejected by the verifier).
struct SockAddr {
    ctx: *mut bpf_sock_addr,
    sock_type: u32,
    protocol: u32,
}

impl SockAddr {
    #[inline(always)]
    fn new(ctx: &SockAddrContext) -> Self {
        let raw = ctx.sock_addr;
        // SAFETY: the kernel hands us a valid bpf_sock_addr for the program's lifetime.
        unsafe {
            Self {
                ctx: raw,
                sock_type: ptr::read_volatile(&(*raw).type_),
                protocol: ptr::read_volatile(&(*raw).protocol),
            }
        }
    }

    #[inline(always)]
    fn is_tcp(&self) -> bool {
        self.sock_type == SOCK_STREAM && self.protocol == IPPROTO_TCP
    }

    #[inline(always)]
    fn is_udp(&self) -> bool {
        self.sock_type == SOCK_DGRAM && self.protocol == IPPROTO_UDP
    }

    #[inline(always)]
    fn port(&self) -> u16 {
        // SAFETY: see `new`. The port sits in the low 16 bits, network order.
        let raw = unsafe { ptr::read_volatile(&(*self.ctx).user_port) };
        u16::from_be(raw as u16)
    }

    #[inline(always)]
    fn set_port(&self, port: u16) {
        // SAFETY: see `new`; user_port is writable for these attach types.
        unsafe { ptr::write_volatile(&mut (*self.ctx).user_port, port.to_be() as u32) };
    }

    #[inline(always)]
    fn ip4(&self) -> u32 {
        // SAFETY: see `new`.
        unsafe { ptr::read_volatile(&(*self.ctx).user_ip4) }
    }

    #[inline(always)]
    fn set_ip4(&self, ip: u32) {
        // SAFETY: see `new`.
        unsafe { ptr::write_volatile(&mut (*self.ctx).user_ip4, ip) };
    }

    #[inline(always)]
    fn ip6(&self) -> [u32; 4] {
        // SAFETY: see `new`; each word is read on its own, as the verifier requires.
        unsafe {
            [
                ptr::read_volatile(&(*self.ctx).user_ip6[0]),
                ptr::read_volatile(&(*self.ctx).user_ip6[1]),
                ptr::read_volatile(&(*self.ctx).user_ip6[2]),
                ptr::read_volatile(&(*self.ctx).user_ip6[3]),
            ]
        }
    }

    #[inline(always)]
    fn set_ip6(&self, ip: [u32; 4]) {
        // SAFETY: see `new`; 4-byte stores only.
        unsafe {
            ptr::write_volatile(&mut (*self.ctx).user_ip6[0], ip[0]);
            ptr::write_volatile(&mut (*self.ctx).user_ip6[1], ip[1]);
            ptr::write_volatile(&mut (*self.ctx).user_ip6[2], ip[2]);
            ptr::write_volatile(&mut (*self.ctx).user_ip6[3], ip[3]);
        }
    }

    #[inline(always)]
    fn cookie(&self) -> u64 {
        // SAFETY: bpf_get_socket_cookie accepts a bpf_sock_addr context.
        unsafe { bpf_get_socket_cookie(self.ctx as *mut c_void) }
    }
}

/// Who is connecting, from the current task.
#[inline(always)]
fn orig_dst(addr: [u32; 4], port: u16, family: u16) -> OrigDst {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    OrigDst {
        addr,
        port,
        family,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        flags: 0,
        // SAFETY: no arguments; allowed in cgroup sock_addr programs.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        connect_ns: 0,
    }
}

#[inline(always)]
fn remember(sa: &SockAddr, orig: &OrigDst) -> bool {
    if SOCK_ORIG.insert(sa.cookie(), orig, 0).is_ok() {
        true
    } else {
        count(Counter::MapFull);
        false
    }
}

/// Where a UDP/53 flow goes instead, or `None` when DNS is denied.
#[inline(always)]
fn dns_target(cfg: &Config) -> Option<([u32; 4], u16)> {
    if cfg.flags & CONFIG_DNS_ENABLED == 0 {
        count(Counter::DnsDenied);
        return None;
    }
    Some((cfg.dns_addr, cfg.dns_port))
}

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    let sa = SockAddr::new(&ctx);
    let Some(cfg) = config() else { return DENY };
    let orig = orig_dst(v4_mapped(sa.ip4()), sa.port(), AF_INET);
    if sa.is_tcp() {
        if !remember(&sa, &orig) {
            return DENY;
        }
        sa.set_ip4(LOOPBACK4);
        sa.set_port(cfg.proxy_port);
        count(Counter::TcpRedirected);
        return ALLOW;
    }
    if sa.is_udp() && orig.port == DNS_PORT {
        return redirect_dns4(&sa, &cfg, &orig);
    }
    count(Counter::UdpDenied);
    DENY
}

#[inline(always)]
fn redirect_dns4(sa: &SockAddr, cfg: &Config, orig: &OrigDst) -> i32 {
    let Some((addr, port)) = dns_target(cfg) else {
        return DENY;
    };
    if !is_v4_mapped(&addr) {
        // An IPv4 socket cannot reach an IPv6-only resolver.
        count(Counter::DnsDenied);
        return DENY;
    }
    if !remember(sa, orig) {
        return DENY;
    }
    sa.set_ip4(addr[3]);
    sa.set_port(port);
    count(Counter::DnsRedirected);
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    let sa = SockAddr::new(&ctx);
    let Some(cfg) = config() else { return DENY };
    let addr = sa.ip6();
    let orig = orig_dst(addr, sa.port(), AF_INET6);
    if sa.is_tcp() {
        if !remember(&sa, &orig) {
            return DENY;
        }
        // A v4-mapped destination keeps the socket on its IPv4 path: send it to the IPv4
        // listener through the mapped loopback address.
        let proxy = if is_v4_mapped(&addr) {
            v4_mapped(LOOPBACK4)
        } else {
            LOOPBACK6
        };
        sa.set_ip6(proxy);
        sa.set_port(cfg.proxy_port);
        count(Counter::TcpRedirected);
        return ALLOW;
    }
    if sa.is_udp() && orig.port == DNS_PORT {
        return redirect_dns6(&sa, &cfg, &orig);
    }
    count(Counter::UdpDenied);
    DENY
}

#[inline(always)]
fn redirect_dns6(sa: &SockAddr, cfg: &Config, orig: &OrigDst) -> i32 {
    let Some((addr, port)) = dns_target(cfg) else {
        return DENY;
    };
    // Native IPv6 sockets can reach a v4-mapped resolver only if they are dual-stack, which
    // connect() will tell the caller; a mapped destination must stay mapped.
    if is_v4_mapped(&orig.addr) != is_v4_mapped(&addr) {
        count(Counter::DnsDenied);
        return DENY;
    }
    if !remember(sa, orig) {
        return DENY;
    }
    sa.set_ip6(addr);
    sa.set_port(port);
    count(Counter::DnsRedirected);
    ALLOW
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    let sa = SockAddr::new(&ctx);
    let Some(cfg) = config() else { return DENY };
    let orig = orig_dst(v4_mapped(sa.ip4()), sa.port(), AF_INET);
    if sa.is_udp() && orig.port == DNS_PORT {
        return redirect_dns4(&sa, &cfg, &orig);
    }
    count(Counter::UdpDenied);
    DENY
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    let sa = SockAddr::new(&ctx);
    let Some(cfg) = config() else { return DENY };
    let orig = orig_dst(sa.ip6(), sa.port(), AF_INET6);
    if sa.is_udp() && orig.port == DNS_PORT {
        return redirect_dns6(&sa, &cfg, &orig);
    }
    count(Counter::UdpDenied);
    DENY
}

/// The address the application asked for, if this socket was redirected.
#[inline(always)]
fn recorded(sa: &SockAddr) -> Option<OrigDst> {
    // SAFETY: the value is copied out at once; a concurrent LRU eviction can at worst give a
    // stale copy, never a dangling one.
    unsafe { SOCK_ORIG.get(sa.cookie()).copied() }
}

#[inline(always)]
fn restore4(ctx: &SockAddrContext) -> i32 {
    let sa = SockAddr::new(ctx);
    if let Some(orig) = recorded(&sa) {
        sa.set_ip4(orig.addr[3]);
        sa.set_port(orig.port);
        count(Counter::PeerRestored);
    }
    ALLOW
}

#[inline(always)]
fn restore6(ctx: &SockAddrContext) -> i32 {
    let sa = SockAddr::new(ctx);
    if let Some(orig) = recorded(&sa) {
        sa.set_ip6(orig.addr);
        sa.set_port(orig.port);
        count(Counter::PeerRestored);
    }
    ALLOW
}

#[cgroup_sock_addr(recvmsg4)]
pub fn recvmsg4(ctx: SockAddrContext) -> i32 {
    restore4(&ctx)
}

#[cgroup_sock_addr(recvmsg6)]
pub fn recvmsg6(ctx: SockAddrContext) -> i32 {
    restore6(&ctx)
}

#[cgroup_sock_addr(getpeername4)]
pub fn getpeername4(ctx: SockAddrContext) -> i32 {
    restore4(&ctx)
}

#[cgroup_sock_addr(getpeername6)]
pub fn getpeername6(ctx: SockAddrContext) -> i32 {
    restore6(&ctx)
}

#[sock_ops]
pub fn sock_ops(ctx: SockOpsContext) -> u32 {
    // SAFETY: the kernel hands us a valid bpf_sock_ops; each field is read once.
    let op = unsafe { ptr::read_volatile(&(*ctx.ops).op) };
    if op != BPF_SOCK_OPS_TCP_CONNECT_CB {
        return 1;
    }
    // SAFETY: as above. Every address field is read before branching on the family: reads
    // chosen by a branch get merged into one computed context offset, which the verifier
    // rejects.
    let (family, local_port, ip4, ip6) = unsafe {
        (
            ptr::read_volatile(&(*ctx.ops).family),
            ptr::read_volatile(&(*ctx.ops).local_port),
            ptr::read_volatile(&(*ctx.ops).local_ip4),
            [
                ptr::read_volatile(&(*ctx.ops).local_ip6[0]),
                ptr::read_volatile(&(*ctx.ops).local_ip6[1]),
                ptr::read_volatile(&(*ctx.ops).local_ip6[2]),
                ptr::read_volatile(&(*ctx.ops).local_ip6[3]),
            ],
        )
    };
    let addr = if family == AF_INET as u32 {
        v4_mapped(ip4)
    } else {
        ip6
    };
    // SAFETY: bpf_get_socket_cookie accepts a sock_ops context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops as *mut c_void) };
    // SAFETY: copied out at once, see `recorded`.
    let Some(mut orig) = (unsafe { SOCK_ORIG.get(cookie).copied() }) else {
        count(Counter::RekeyMiss);
        return 1;
    };
    let key = PeerKey {
        addr,
        port: local_port,
    };
    // SAFETY: no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    orig.connect_ns = now;
    // A fresh record still under this key belongs to a connection the proxy has not accepted
    // yet (the client reset it and re-used the port at once). Which accepted socket is which
    // can then no longer be told apart: mark it so the proxy refuses rather than mix them up.
    // SAFETY: copied out at once, see `recorded`.
    if let Some(previous) = unsafe { PEER_ORIG.get(key).copied() }
        && now.wrapping_sub(previous.connect_ns) < STALE_RECORD_NS
    {
        orig.flags |= ORIG_AMBIGUOUS;
        count(Counter::Ambiguous);
    }
    if PEER_ORIG.insert(key, orig, 0).is_ok() {
        count(Counter::Rekeyed);
    } else {
        count(Counter::MapFull);
    }
    1
}

const IPPROTO_IP: u32 = 0;

#[cgroup_sock(sock_create)]
pub fn sock_create(ctx: SockContext) -> i32 {
    let sk: *mut bpf_sock = ctx.sock;
    // SAFETY: valid bpf_sock for the program's lifetime; each field read once.
    let (family, sock_type, protocol) = unsafe {
        (
            ptr::read_volatile(&(*sk).family),
            ptr::read_volatile(&(*sk).type_),
            ptr::read_volatile(&(*sk).protocol),
        )
    };
    if family != AF_INET as u32 && family != AF_INET6 as u32 {
        return ALLOW;
    }
    // Only plain TCP and UDP: raw, ICMP ("ping"), SCTP, MPTCP and UDP-Lite sockets would carry
    // traffic the redirect does not see.
    let plain = (sock_type == SOCK_STREAM && (protocol == IPPROTO_TCP || protocol == IPPROTO_IP))
        || (sock_type == SOCK_DGRAM && (protocol == IPPROTO_UDP || protocol == IPPROTO_IP));
    if plain {
        ALLOW
    } else {
        count(Counter::SocketDenied);
        DENY
    }
}

#[cgroup_sock(sock_release)]
pub fn sock_release(ctx: SockContext) -> i32 {
    // SAFETY: bpf_get_socket_cookie accepts a bpf_sock context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock as *mut c_void) };
    let _ = SOCK_ORIG.remove(cookie);
    ALLOW
}

const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86DD;
const NEXTHDR_TCP: u8 = 6;
const NEXTHDR_UDP: u8 = 17;
const NEXTHDR_ICMPV6: u8 = 58;

/// Last line of defence, below the socket hooks: every packet the workload sends must be
/// headed for loopback (the proxy) or the policy's resolver, with no IPv4 options and no IPv6
/// extension headers. Source routing (IP_OPTIONS LSRR/SSRR, IPV6_RTHDR) would otherwise send
/// a packet whose socket address was rewritten to some other first hop.
#[cgroup_skb(egress)]
pub fn egress(ctx: SkBuffContext) -> i32 {
    if egress_allowed(&ctx) {
        ALLOW
    } else {
        count(Counter::EgressDropped);
        DENY
    }
}

/// The first N bytes of the packet (its IP header). A constant length, which the verifier
/// needs; aya's `load_bytes` clamps it to the packet and can reach zero.
#[inline(always)]
fn load<const N: usize>(ctx: &SkBuffContext, into: &mut [u8; N]) -> bool {
    // SAFETY: `into` is N writable bytes on our stack; the helper checks the packet bounds.
    unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const c_void,
            0,
            into.as_mut_ptr() as *mut c_void,
            N as u32,
        ) == 0
    }
}

#[inline(always)]
fn egress_allowed(ctx: &SkBuffContext) -> bool {
    let Some(cfg) = config() else { return false };
    let dns_on = cfg.flags & CONFIG_DNS_ENABLED != 0;
    let protocol = u32::from(u16::from_be(ctx.skb.protocol() as u16));
    if protocol == ETH_P_IP {
        let mut header = [0u8; 20];
        if !load(ctx, &mut header) {
            return false;
        }
        if header[0] & 0x0f != 5 {
            return false;
        }
        let daddr = u32::from_ne_bytes([header[16], header[17], header[18], header[19]]);
        if header[16] == 127 {
            return true;
        }
        return dns_on && is_v4_mapped(&cfg.dns_addr) && daddr == cfg.dns_addr[3];
    }
    if protocol == ETH_P_IPV6 {
        let mut header = [0u8; 40];
        if !load(ctx, &mut header) {
            return false;
        }
        let next = header[6];
        if next != NEXTHDR_TCP && next != NEXTHDR_UDP && next != NEXTHDR_ICMPV6 {
            return false;
        }
        let mut daddr = [0u32; 4];
        let mut i = 0;
        while i < 4 {
            let o = 24 + 4 * i;
            daddr[i] = u32::from_ne_bytes([header[o], header[o + 1], header[o + 2], header[o + 3]]);
            i += 1;
        }
        if daddr == LOOPBACK6 {
            return true;
        }
        return dns_on && daddr == cfg.dns_addr;
    }
    false
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
