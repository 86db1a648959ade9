//! Datum batch upsert throughput on the local Postgres (`TEST_DATABASE_URL`, else `DATABASE_URL`,
//! else postgres://postgres@127.0.0.1:5432/postgres; a database of its own, dropped at the end):
//! one poll's worth of datums written in one transaction, as `Poller::write` does — new datums
//! (a fresh hour or day each iteration) and a batch that is all unchanged (the look-back
//! overlap of the next poll).
//!
//! `cargo bench -p tidegate-store --bench upsert`

use chrono::{DateTime, Duration, TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use model::{DataSourceId, UserId};
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};
use store::datums::NewDatum;
use tidegate_store as store;

fn server() -> String {
    std::env::var("TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The same server, database `db` (a query string such as `?host=/run/postgresql` is kept).
fn with_db(url: &str, db: &str) -> String {
    let (path, query) = url.split_once('?').map_or((url, None), |(p, q)| (p, Some(q)));
    let (base, _) = path.rsplit_once('/').expect("a database URL");
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// `n` five-minute cbg datums from `start`, shaped as the Dexcom mapping stores them.
fn cbg(user: &UserId, source: &DataSourceId, start: DateTime<Utc>, n: usize) -> Vec<NewDatum> {
    (0..n)
        .map(|i| {
            let time = start + Duration::minutes(5 * i as i64);
            let id = format!("{:032x}", (start.timestamp() as u128) << 20 | i as u128);
            let t = time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let body = json!({
                "id": id, "type": "cbg", "units": "mg/dL", "value": 90 + (i % 120) as i64,
                "time": t, "deviceTime": t.trim_end_matches('Z'), "timezoneOffset": -480,
                "deviceId": "G7-SN-0123456789", "uploadId": format!("upid_{}", source.as_str()),
                "trend": "flat", "trendRate": 0.1,
                "origin": {"id": format!("{id}-egv"), "name": "com.dexcom.api", "type": "service"},
                "payload": {"transmitterId": "8XXXXX", "transmitterTicks": 1_234_567 + i, "displayDevice": "iOS",
                            "displayApp": "G7", "recordId": id, "rateUnit": "mg/dL/min"},
                "_userId": user.as_str(),
            });
            NewDatum { id, time, kind: "cbg".into(), body }
        })
        .collect()
}

async fn write(pool: &PgPool, user: &UserId, source: &DataSourceId, datums: &[NewDatum]) {
    let mut tx = pool.begin().await.expect("begin");
    store::datums::write_batch(&mut tx, user, source, datums, &[], Utc::now()).await.expect("write");
    tx.commit().await.expect("commit");
}

fn upsert(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let server = server();
    let name = format!("tidegate_bench_upsert_{}", std::process::id());
    let pool = rt.block_on(async {
        let mut admin = PgConnection::connect(&server).await.expect("Postgres for the bench");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}"))).execute(&mut admin).await.ok();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create");
        let pool = PgPool::connect(&with_db(&server, &name)).await.expect("connect");
        store::MIGRATOR.run(&pool).await.expect("migrate");
        pool
    });
    let user = UserId::parse("00000000b1").expect("user id");
    let source = DataSourceId::generate();
    rt.block_on(async {
        let now = Utc::now();
        sqlx::query(
            "INSERT INTO data_sources (id, user_id, provider, state, ever_connected, created_time, modified_time)
             VALUES ($1, $2, 'dexcom', 'connected', true, $3, $3)",
        )
        .bind(source.as_str())
        .bind(user.as_str())
        .bind(now)
        .execute(&pool)
        .await
        .expect("a data source");
    });
    let epoch = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().expect("a time");
    let mut g = c.benchmark_group("datum_upsert");
    for (label, n) in [("hour", 12usize), ("day", 288)] {
        g.throughput(Throughput::Elements(n as u64));
        let mut k = 0i64;
        g.bench_function(format!("new_{label}_{n}_cbg"), |b| {
            b.iter_batched(
                || {
                    k += 1;
                    cbg(&user, &source, epoch + Duration::days(k), n)
                },
                |batch| rt.block_on(write(&pool, &user, &source, &batch)),
                criterion::BatchSize::SmallInput,
            )
        });
        let same = cbg(&user, &source, epoch - Duration::days(1), n);
        rt.block_on(write(&pool, &user, &source, &same));
        g.bench_function(format!("unchanged_{label}_{n}_cbg"), |b| {
            b.iter(|| rt.block_on(write(&pool, &user, &source, &same)))
        });
    }
    g.finish();
    rt.block_on(async {
        pool.close().await;
        let mut admin = PgConnection::connect(&server).await.expect("Postgres");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}"))).execute(&mut admin).await.ok();
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(8));
    targets = upsert
}
criterion_main!(benches);
