//! A tokio-postgres client for the PostgreSQL suite, run inside the enforced cgroup: extended
//! protocol, prepared statements, binary result formats and pipelining. Prints one JSON line
//! per step.

use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = std::env::args()
        .nth(1)
        .ok_or("usage: pg_client PORT [garbage]")?;
    if std::env::args().nth(2).as_deref() == Some("garbage") {
        return garbage(&port).await;
    }
    let config =
        format!("host=127.0.0.1 port={port} user=agent password=stale-static-password dbname=shop");
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);

    // Prepared, binary int parameter and result, text column masked.
    let stmt = client
        .prepare("SELECT id, email, card_number FROM customers WHERE id = $1")
        .await?;
    let row = client.query_one(&stmt, &[&1i32]).await?;
    let id: i32 = row.get(0);
    let email: String = row.get(1);
    let card: String = row.get(2);
    println!(
        "{}",
        json!({"step": "prepared", "id": id, "email": email, "card": card})
    );

    // Pipelined: two queries in flight at once on one connection.
    let (a, b) = futures_util::future::join(
        client.query_one("SELECT count(*)::int FROM customers", &[]),
        client.query_one("SELECT email FROM customers WHERE id = $1", &[&2i32]),
    )
    .await;
    let count: i32 = a?.get(0);
    let other: String = b?.get(0);
    println!(
        "{}",
        json!({"step": "pipelined", "count": count, "email": other})
    );

    // A write without a grant: refused at prepare time, with the server's SQLSTATE.
    match client.prepare("DELETE FROM customers WHERE id = $1").await {
        Ok(_) => println!("{}", json!({"step": "delete", "error": null})),
        Err(e) => {
            let db = e.as_db_error();
            println!(
                "{}",
                json!({"step": "delete", "code": db.map(|d| d.code().code()), "error": db.map(|d| d.message())})
            );
        }
    }
    // The connection is still usable after the denial.
    let again = client.query_one("SELECT 1::int", &[]).await?;
    let one: i32 = again.get(0);
    println!("{}", json!({"step": "after", "value": one}));

    // A long statement cancelled from a second connection (the CancelRequest goes through
    // enforcer, which maps its key to the server's).
    let token = client.cancel_token();
    let sleeper = client.query_one("SELECT pg_sleep(30)::text", &[]);
    let canceller = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        token.cancel_query(tokio_postgres::NoTls).await
    };
    let started = std::time::Instant::now();
    let (slept, cancelled) = futures_util::future::join(sleeper, canceller).await;
    let code = slept
        .err()
        .and_then(|e| e.as_db_error().map(|d| d.code().code().to_owned()));
    println!(
        "{}",
        json!({"step": "cancel", "sent": cancelled.is_ok(), "code": code, "secs": started.elapsed().as_secs()})
    );
    Ok(())
}

/// A client that logs in properly, then sends a message whose length is a lie: enforcer must
/// end the session with an error, not hang or crash.
async fn garbage(port: &str) -> Result<(), Box<dyn std::error::Error>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}")).await?;
    let mut body = Vec::new();
    body.extend_from_slice(&196_608i32.to_be_bytes());
    for (k, v) in [("user", "agent"), ("database", "shop")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    s.write_all(&((body.len() + 4) as i32).to_be_bytes())
        .await?;
    s.write_all(&body).await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // Up to the first ReadyForQuery ('Z', length 5, status).
    while !seen.windows(5).any(|w| w == b"Z\0\0\0\x05") {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err("closed before ReadyForQuery".into());
        }
        seen.extend_from_slice(&buf[..n]);
    }
    // A Query claiming to be 2 GB long, then an unknown message type.
    s.write_all(b"Q\x7f\xff\xff\xf0SELECT 1").await?;
    let mut reply = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.read_to_end(&mut reply),
    )
    .await;
    let text = String::from_utf8_lossy(&reply).into_owned();
    println!(
        "{}",
        json!({"step": "garbage", "closed": read.is_ok(), "error": text.contains("08P01"), "reply": text})
    );
    Ok(())
}
