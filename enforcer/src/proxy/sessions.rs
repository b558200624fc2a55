//! The connections open right now, for `GET /v1/sessions` and `enforcer sessions list`.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};

use crate::record::Process;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: u64,
    pub workload: String,
    pub principal: String,
    pub process: Process,
    pub orig_dst: SocketAddr,
    /// resource | egress | admin
    pub route: String,
    pub rule: Option<String>,
    /// Unix milliseconds.
    pub started_at: i64,
}

#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<BTreeMap<u64, SessionInfo>>,
}

/// Removes its session when the connection task ends, however it ends.
pub struct SessionGuard {
    sessions: Arc<Sessions>,
    id: u64,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut open = match self.sessions.open.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        open.remove(&self.id);
    }
}

impl Sessions {
    pub fn open(self: &Arc<Self>, info: SessionInfo) -> SessionGuard {
        let id = info.id;
        let mut open = match self.open.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        open.insert(id, info);
        SessionGuard {
            sessions: Arc::clone(self),
            id,
        }
    }

    pub fn list(&self) -> Vec<SessionInfo> {
        let open = match self.open.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        open.values().cloned().collect()
    }
}
