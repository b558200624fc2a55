//! One connection from the workload, with what the kernel told us about it.

use std::net::SocketAddr;

use enforcer_common::OrigDst;

use crate::record::Process;
use crate::redirect::orig_socket_addr;

/// An accepted workload connection whose original destination is known.
#[derive(Debug, Clone)]
pub struct Connection {
    pub id: u64,
    pub workload: String,
    /// The client's end as the proxy sees it.
    pub peer: SocketAddr,
    /// Where the workload wanted to go.
    pub orig_dst: SocketAddr,
    pub process: Process,
}

impl Connection {
    pub fn new(id: u64, workload: &str, peer: SocketAddr, orig: &OrigDst) -> Self {
        Connection {
            id,
            workload: workload.to_owned(),
            peer,
            orig_dst: orig_socket_addr(orig),
            process: process(orig),
        }
    }
}

impl Connection {
    /// A client of a resource's gateway, outside any enforced cgroup: no kernel record, so
    /// no process; who it is comes from the grant token it presents.
    pub fn outside(id: u64, peer: SocketAddr, gateway: SocketAddr) -> Self {
        Connection {
            id,
            workload: OUTSIDE.to_owned(),
            peer,
            orig_dst: gateway,
            process: Process {
                pid: 0,
                tid: 0,
                uid: 0,
                gid: 0,
                comm: String::new(),
                cgroup_id: 0,
            },
        }
    }
}

/// The workload name recorded for gateway clients until their token names theirs.
pub const OUTSIDE: &str = "(outside)";

fn process(orig: &OrigDst) -> Process {
    let len = orig
        .comm
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(orig.comm.len());
    Process {
        pid: orig.pid,
        tid: orig.tid,
        uid: orig.uid,
        gid: orig.gid,
        comm: String::from_utf8_lossy(&orig.comm[..len]).into_owned(),
        cgroup_id: orig.cgroup_id,
    }
}
