//! A tokio-postgres client for the PostgreSQL suite, run inside the enforced cgroup: extended
//! protocol, prepared statements, binary result formats and pipelining. Prints one JSON line
//! per step.

use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = std::env::args().nth(1).ok_or("usage: pg_client PORT")?;
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
    Ok(())
}
