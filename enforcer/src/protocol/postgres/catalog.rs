//! What a result column really is. A RowDescription names a column as the query labelled it
//! (`SELECT card AS x` says `x`) but also gives the table OID and attribute number it comes
//! from; enforcer resolves those through the server's catalog, so a masking rule for
//! `customers.card` holds whatever the workload calls the column. COPY output carries no
//! column description at all, so its query is described here too.
//!
//! Lookups run on a separate connection per (server, database) with the injected credential,
//! never on the workload's own connection, whose messages are in flight; results are cached
//! for a short time (a table dropped and re-created gets a new OID).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex as StdMutex},
    time::{Duration, Instant},
};

use bytes::BytesMut;
use pgwire::messages::{
    DecodeContext, Message, PgWireBackendMessage, ProtocolVersion,
    extendedquery::{Describe, Parse, Sync as PgSync},
    simplequery::Query,
};
use tokio::{
    io::{AsyncWriteExt, ReadHalf, WriteHalf},
    sync::Mutex,
};

use super::{
    PgError,
    frame::{FrameReader, body, data_row_values, decode},
    upstream::{MAX_BACKEND, Secret, Upstream, open},
};
use crate::policy::Resource;

const CACHE_FOR: Duration = Duration::from_secs(30);
const IDLE_CLOSE: Duration = Duration::from_secs(60);
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Catalog connections open at once, across resources and databases (the workload chooses
/// database names).
const MAX_CONNECTIONS: usize = 16;
const MAX_TABLES: usize = 10_000;

/// A table, by its catalog names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub schema: String,
    pub name: String,
    columns: HashMap<i16, String>,
}

impl Table {
    pub fn column(&self, attnum: i16) -> Option<&str> {
        self.columns.get(&attnum).map(String::as_str)
    }
}

/// A column as a RowDescription describes it.
#[derive(Debug, Clone)]
pub struct Described {
    pub name: String,
    pub table_oid: u32,
    pub attnum: i16,
    pub type_oid: u32,
}

type Key = (String, SocketAddr, String);
/// A table as looked up, and when.
type Cached = (Instant, Arc<Table>);

struct CatalogConn {
    reader: FrameReader<ReadHalf<Upstream>>,
    writer: WriteHalf<Upstream>,
}

struct Slot {
    conn: Arc<Mutex<Option<CatalogConn>>>,
    last_used: Instant,
}

#[derive(Default)]
pub struct Catalogs {
    slots: StdMutex<HashMap<Key, Slot>>,
    tables: StdMutex<HashMap<(Key, u32), Cached>>,
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Where and as whom a session's catalog lookups go.
pub struct Scope<'a> {
    pub resource: &'a Resource,
    pub addr: SocketAddr,
    pub database: &'a str,
    pub user: &'a str,
}

impl Scope<'_> {
    fn key(&self) -> Key {
        (
            self.resource.name.clone(),
            self.addr,
            self.database.to_owned(),
        )
    }
}

/// Tables looked up, and until when what was learnt of them may be relied on.
#[derive(Debug)]
pub struct Tables {
    pub found: HashMap<u32, Arc<Table>>,
    /// When the oldest of them is due to be looked up again.
    pub fresh_until: Instant,
}

impl Catalogs {
    /// The tables behind `oids` (0, an expression, is never looked up).
    pub async fn tables(&self, scope: &Scope<'_>, oids: &[u32]) -> Result<Tables, PgError> {
        let key = scope.key();
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        let mut fresh_until = Instant::now() + CACHE_FOR;
        {
            let cache = lock(&self.tables);
            for &oid in oids {
                if oid == 0 || found.contains_key(&oid) || missing.contains(&oid) {
                    continue;
                }
                match cache.get(&(key.clone(), oid)) {
                    Some((at, table)) if at.elapsed() < CACHE_FOR => {
                        fresh_until = fresh_until.min(*at + CACHE_FOR);
                        found.insert(oid, Arc::clone(table));
                    }
                    _ => missing.push(oid),
                }
            }
        }
        if missing.is_empty() {
            return Ok(Tables { found, fresh_until });
        }
        let list = missing
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        // OIDs are numbers enforcer formats itself: nothing of the workload's is in this text.
        let sql = format!(
            "SELECT a.attrelid, n.nspname, c.relname, a.attnum, a.attname \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE a.attrelid IN ({list}) AND a.attnum > 0"
        );
        let rows = self.with_conn(scope, |c| Box::pin(c.query(sql))).await?;
        let mut tables: HashMap<u32, Table> = HashMap::new();
        for row in rows {
            let [
                Some(oid),
                Some(schema),
                Some(name),
                Some(attnum),
                Some(attname),
            ] = row.as_slice()
            else {
                return Err(PgError::Upstream("unexpected catalog row".into()));
            };
            let (Ok(oid), Ok(attnum)) = (oid.parse::<u32>(), attnum.parse::<i16>()) else {
                return Err(PgError::Upstream("unexpected catalog row".into()));
            };
            tables
                .entry(oid)
                .or_insert_with(|| Table {
                    schema: schema.clone(),
                    name: name.clone(),
                    columns: HashMap::new(),
                })
                .columns
                .insert(attnum, attname.clone());
        }
        let mut cache = lock(&self.tables);
        if cache.len() > MAX_TABLES {
            cache.clear();
        }
        for (oid, table) in tables {
            let table = Arc::new(table);
            cache.insert((key.clone(), oid), (Instant::now(), Arc::clone(&table)));
            found.insert(oid, table);
        }
        Ok(Tables { found, fresh_until })
    }

    /// The columns `sql` would return, without running it.
    pub async fn describe(&self, scope: &Scope<'_>, sql: &str) -> Result<Vec<Described>, PgError> {
        let sql = sql.to_owned();
        self.with_conn(scope, |c| Box::pin(c.describe(sql))).await
    }

    async fn with_conn<T>(
        &self,
        scope: &Scope<'_>,
        f: impl for<'c> FnOnce(
            &'c mut CatalogConn,
        ) -> std::pin::Pin<
            Box<dyn Future<Output = Result<T, PgError>> + Send + 'c>,
        >,
    ) -> Result<T, PgError> {
        let key = scope.key();
        let conn = {
            let mut slots = lock(&self.slots);
            // Idle connections are closed (by dropping them) so they do not hold a database.
            slots.retain(|k, s| *k == key || s.last_used.elapsed() < IDLE_CLOSE);
            if !slots.contains_key(&key) && slots.len() >= MAX_CONNECTIONS {
                return Err(PgError::Upstream(
                    "too many catalog connections are open".into(),
                ));
            }
            let slot = slots.entry(key).or_insert_with(|| Slot {
                conn: Arc::new(Mutex::new(None)),
                last_used: Instant::now(),
            });
            slot.last_used = Instant::now();
            Arc::clone(&slot.conn)
        };
        let mut guard = conn.lock().await;
        let run = async {
            if guard.is_none() {
                let secret = Secret::for_resource(scope.resource, scope.user)?;
                let params = vec![
                    ("database".to_owned(), scope.database.to_owned()),
                    ("application_name".to_owned(), "enforcer-catalog".to_owned()),
                ];
                let (mut reader, writer) =
                    open(scope.resource, scope.addr, &secret, &params).await?;
                loop {
                    let Some(frame) = reader.message(MAX_BACKEND).await? else {
                        return Err(PgError::Upstream("catalog connection closed".into()));
                    };
                    match frame[0] {
                        b'Z' => break,
                        b'E' => return Err(PgError::Upstream(error_message(frame))),
                        _ => {}
                    }
                }
                *guard = Some(CatalogConn { reader, writer });
            }
            let Some(c) = guard.as_mut() else {
                return Err(PgError::Upstream("catalog connection unavailable".into()));
            };
            f(c).await
        };
        match tokio::time::timeout(LOOKUP_TIMEOUT, run).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                // A failed connection is not reused; a failed statement leaves it usable,
                // but starting afresh is simpler and rare.
                *guard = None;
                Err(e)
            }
            Err(_) => {
                *guard = None;
                Err(PgError::Upstream("catalog lookup timed out".into()))
            }
        }
    }
}

fn error_message(frame: BytesMut) -> String {
    let ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    match decode(frame, |b| PgWireBackendMessage::decode(b, &ctx)) {
        Ok(PgWireBackendMessage::ErrorResponse(e)) => e
            .fields
            .into_iter()
            .find(|(k, _)| *k == b'M')
            .map_or_else(|| "error".to_owned(), |(_, v)| v),
        _ => "error".to_owned(),
    }
}

impl CatalogConn {
    async fn query(&mut self, sql: String) -> Result<Vec<Vec<Option<String>>>, PgError> {
        let mut out = BytesMut::new();
        Query::new(sql).encode(&mut out)?;
        self.writer.write_all(&out).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let Some(frame) = self.reader.message(MAX_BACKEND).await? else {
                return Err(PgError::Upstream("catalog connection closed".into()));
            };
            match frame[0] {
                b'D' => {
                    let values = data_row_values(body(&frame))
                        .ok_or_else(|| PgError::Upstream("malformed catalog row".into()))?;
                    rows.push(
                        values
                            .into_iter()
                            .map(|v| v.map(|b| String::from_utf8_lossy(b).into_owned()))
                            .collect(),
                    );
                }
                b'E' => error = Some(error_message(frame)),
                b'Z' => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(PgError::Upstream(e)),
            None => Ok(rows),
        }
    }

    async fn describe(&mut self, sql: String) -> Result<Vec<Described>, PgError> {
        let mut out = BytesMut::new();
        Parse::new(None, sql, Vec::new()).encode(&mut out)?;
        Describe::new(b'S', None).encode(&mut out)?;
        PgSync::new().encode(&mut out)?;
        self.writer.write_all(&out).await?;
        let ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
        let mut columns = None;
        let mut error = None;
        loop {
            let Some(frame) = self.reader.message(MAX_BACKEND).await? else {
                return Err(PgError::Upstream("catalog connection closed".into()));
            };
            match frame[0] {
                b'T' => {
                    let PgWireBackendMessage::RowDescription(rd) =
                        decode(frame, |b| PgWireBackendMessage::decode(b, &ctx))?
                    else {
                        return Err(PgError::Upstream("bad RowDescription".into()));
                    };
                    columns = Some(
                        rd.fields
                            .iter()
                            .map(|f| Described {
                                name: f.name.clone(),
                                table_oid: f.table_id as u32,
                                attnum: f.column_id,
                                type_oid: f.type_id,
                            })
                            .collect(),
                    );
                }
                b'n' => columns = Some(Vec::new()),
                b'E' => error = Some(error_message(frame)),
                b'Z' => break,
                _ => {}
            }
        }
        match (error, columns) {
            (Some(e), _) => Err(PgError::Upstream(e)),
            (None, Some(c)) => Ok(c),
            (None, None) => Err(PgError::Upstream("the server did not describe it".into())),
        }
    }
}
