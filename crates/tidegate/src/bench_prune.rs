//! `tidegate bench prune`: retention pruning at scale, with writes running. Seeds `--rows`
//! datums over `--weeks` weekly partitions for `--sources` sources on a fresh database (a few
//! sources left with a backlog and a few refusals, as a platform sink leaves them), then, while
//! writer tasks upsert datums the way polls do (one transaction per poll, `datums::write_batch`),
//! prunes everything older than half the range. Reports the prune's duration, what it dropped and
//! kept, and the writers' latency before and during the prune. docs/PERFORMANCE.md has figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration as StdDuration, Instant};

use anyhow::Context;
use chrono::{Duration, Utc};
use model::{DataSourceId, UserId};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sqlx::{ConnectOptions, Connection};
use store::datums::NewDatum;

use crate::configuration::Settings;

#[derive(Debug, Clone)]
pub struct PruneBench {
    pub rows: u64,
    pub sources: u64,
    pub weeks: i64,
    pub writers: usize,
    pub database: String,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct PruneReport {
    pub rows: u64,
    pub sources: u64,
    pub partitions: usize,
    pub seed_s: f64,
    pub prune_s: f64,
    pub partitions_dropped: u64,
    pub rows_dropped: u64,
    pub rows_kept: u64,
    pub deferred: u64,
    /// The prune's steps, summed over the partitions dropped (ms).
    pub detach_ms: f64,
    pub keep_ms: f64,
    pub drop_ms: f64,
    pub default_ms: f64,
    pub writes_before: usize,
    pub write_ms_p50_before: f64,
    pub write_ms_p99_before: f64,
    pub writes_during: usize,
    pub write_ms_p50_during: f64,
    pub write_ms_p99_during: f64,
    pub write_ms_max_during: f64,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub async fn run(mut settings: Settings, o: PruneBench) -> anyhow::Result<PruneReport> {
    anyhow::ensure!(o.rows > 0 && o.sources > 0 && o.weeks >= 2, "--rows, --sources > 0 and --weeks ≥ 2");
    let mut url = reqwest::Url::parse(settings.database.url.expose_secret()).context("database.url")?;
    url.set_path(&format!("/{}", o.database));
    let mut admin =
        settings.connect_options()?.database("postgres").connect().await.context("connecting to Postgres")?;
    let quoted = format!("\"{}\"", o.database.replace('"', "\"\""));
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")))
        .execute(&mut admin)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {quoted}"))).execute(&mut admin).await?;
    admin.close().await?;
    settings.database.url = SecretString::from(url.to_string());
    settings.database.max_connections = settings.database.max_connections.max(o.writers as u32 + 4);
    let store = crate::startup::store(&settings)?;
    store.migrate().await?;
    let now = Utc::now();
    let from = store::partitions::week_start(now) - Duration::weeks(o.weeks - 1);
    store.ensure_partitions(from, now + Duration::weeks(1), now).await?;

    // Seed: sources, then the datums spread evenly over the weeks (SQL-side, in chunks).
    let t = Instant::now();
    let mut conn = settings.connect_options()?.database(&o.database).disable_statement_logging().connect().await?;
    seed_datums(&mut conn, o.rows, o.sources, 1, from, now).await?;
    // Everything delivered, except a backlog on one source in a hundred (its last 50 writes)
    // and a refused datum on one in fifty.
    sqlx::query(
        "UPDATE data_sources SET delivered_seq = delivered_seq - 50 * (SELECT count(*) FROM data_sources)
                 WHERE ('x' || right(id, 8))::bit(32)::int % 100 = 0",
    )
    .execute(&mut conn)
    .await?;
    sqlx::query(
        "INSERT INTO datum_rejections (data_source_id, user_id, datum_id, seq, type, reason, rejected_time)
         SELECT DISTINCT ON (d.data_source_id) d.data_source_id, d.user_id, d.id, d.seq, d.type, 'bench', $1
         FROM datums d WHERE ('x' || right(d.data_source_id, 8))::bit(32)::int % 50 = 0 AND d.time < $2
         ORDER BY d.data_source_id, d.seq",
    )
    .bind(now)
    .bind(from + Duration::weeks(1))
    .execute(&mut conn)
    .await?;
    sqlx::query("ANALYZE datums").execute(&mut conn).await?;
    sqlx::query("ANALYZE data_sources").execute(&mut conn).await?;
    let mut r = PruneReport {
        rows: o.rows,
        sources: o.sources,
        partitions: store.datum_partitions().await?.len(),
        seed_s: t.elapsed().as_secs_f64(),
        ..Default::default()
    };
    eprintln!("seeded {} datums for {} sources in {:.0} s", o.rows, o.sources, r.seed_s);

    // Writers: poll-sized upserts (12 new readings), one transaction each.
    let stop = Arc::new(AtomicBool::new(false));
    let during = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..o.writers {
        let (store, stop, during) = (store.clone(), stop.clone(), during.clone());
        let sources = o.sources;
        tasks.spawn(async move {
            let mut lat: Vec<(bool, f64)> = Vec::new();
            let mut k = w as u64;
            while !stop.load(Ordering::Relaxed) {
                k += 7;
                let i = 1 + k % sources;
                let user = UserId::parse(&format!("{i:010}"))?;
                let source = DataSourceId::parse(&format!("{i:024x}"))?;
                let at = Utc::now();
                let datums: Vec<NewDatum> = (0..12)
                    .map(|j| NewDatum {
                        id: format!("{:032x}", (k << 8) | j),
                        time: at - Duration::minutes(5 * j as i64),
                        kind: "cbg".into(),
                        body: serde_json::json!({"type": "cbg", "units": "mg/dL", "value": 100 + j,
                            "origin": {"id": format!("w{k}-{j}"), "name": "bench", "type": "service", "version": "1"}}),
                    })
                    .collect();
                let t = Instant::now();
                let mut tx = store.begin().await?;
                store::datums::write_batch(&mut tx, &user, &source, &datums, &[], at).await?;
                tx.commit().await?;
                lat.push((during.load(Ordering::Relaxed), t.elapsed().as_secs_f64() * 1000.0));
            }
            anyhow::Ok(lat)
        });
    }
    tokio::time::sleep(StdDuration::from_secs(10)).await;
    during.store(true, Ordering::Relaxed);
    let cutoff = from + Duration::weeks(o.weeks / 2);
    let t = Instant::now();
    let p = store.prune_datums(cutoff).await?;
    r.prune_s = t.elapsed().as_secs_f64();
    tokio::time::sleep(StdDuration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut before, mut inside) = (Vec::new(), Vec::new());
    while let Some(l) = tasks.join_next().await {
        for (d, ms) in l?? {
            if d { inside.push(ms) } else { before.push(ms) }
        }
    }
    before.sort_by(f64::total_cmp);
    inside.sort_by(f64::total_cmp);
    (r.partitions_dropped, r.rows_dropped, r.rows_kept, r.deferred) = (p.partitions, p.rows, p.kept, p.deferred);
    (r.detach_ms, r.keep_ms, r.drop_ms, r.default_ms) = (p.detach_ms, p.keep_ms, p.drop_ms, p.default_ms);
    (r.writes_before, r.write_ms_p50_before, r.write_ms_p99_before) =
        (before.len(), pct(&before, 0.5), pct(&before, 0.99));
    (r.writes_during, r.write_ms_p50_during, r.write_ms_p99_during, r.write_ms_max_during) =
        (inside.len(), pct(&inside, 0.5), pct(&inside, 0.99), inside.last().copied().unwrap_or(0.0));
    Ok(r)
}

pub fn table(r: &PruneReport) -> String {
    format!(
        "datums × sources            {} × {} in {} weekly partitions (seeded in {:.0} s)\n\
         prune                       {:.2} s: {} partitions, ≈ {} rows dropped, {} kept (undelivered or refused), {} deferred\n\
         prune steps                 detach {:.0} ms, keep {:.0} ms, drop + commit {:.0} ms, default partition {:.0} ms\n\
         write p50 / p99 before      {:.1} / {:.1} ms ({} poll-sized writes)\n\
         write p50 / p99 / max during {:.1} / {:.1} / {:.1} ms ({} writes during the prune and 2 s after)\n",
        r.rows,
        r.sources,
        r.partitions,
        r.seed_s,
        r.prune_s,
        r.partitions_dropped,
        r.rows_dropped,
        r.rows_kept,
        r.deferred,
        r.detach_ms,
        r.keep_ms,
        r.drop_ms,
        r.default_ms,
        r.write_ms_p50_before,
        r.write_ms_p99_before,
        r.writes_before,
        r.write_ms_p50_during,
        r.write_ms_p99_during,
        r.write_ms_max_during,
        r.writes_during
    )
}

/// Seed `sources` synthetic connected sources (numbered from `first`: source `lpad(hex(i), 24)`,
/// user `lpad(i, 10)`; they have no schedule rows, so nothing polls them) and `rows` cbg datums
/// spread evenly over `from..until`, every one delivered (the sources' marks at their latest
/// write). SQL-side, in chunks of 500,000.
pub(crate) async fn seed_datums(
    conn: &mut sqlx::PgConnection,
    rows: u64,
    sources: u64,
    first: u64,
    from: chrono::DateTime<Utc>,
    until: chrono::DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO data_sources (id, user_id, provider, state, ever_connected, created_time, modified_time)
         SELECT lpad(to_hex(i), 24, '0'), lpad(i::text, 10, '0'), 'dexcom', 'connected', true, $1, $1
         FROM generate_series($2::bigint, $3::bigint) i",
    )
    .bind(until)
    .bind(first as i64)
    .bind((first + sources - 1) as i64)
    .execute(&mut *conn)
    .await?;
    let span_secs = (until - from).num_seconds();
    let chunk = 500_000u64;
    let mut done = 0u64;
    while done < rows {
        let n = chunk.min(rows - done);
        sqlx::query(
            "INSERT INTO datums (user_id, id, time, data_source_id, type, body, created_time, modified_time)
             SELECT lpad(($6 + g % $3)::text, 10, '0'), md5(g::text),
                    $4::timestamptz + make_interval(secs => (g * 7919 % $5)::double precision),
                    lpad(to_hex($6 + g % $3), 24, '0'), 'cbg',
                    jsonb_build_object('type', 'cbg', 'units', 'mg/dL', 'value', 40 + g % 300,
                                       'origin', jsonb_build_object('id', g::text, 'name', 'com.dexcom.api',
                                                                    'type', 'service', 'version', '3.0')),
                    $4, $4
             FROM generate_series($1::bigint, $2::bigint) g",
        )
        .bind(done as i64)
        .bind((done + n - 1) as i64)
        .bind(sources as i64)
        .bind(from)
        .bind(span_secs)
        .bind(first as i64)
        .execute(&mut *conn)
        .await?;
        done += n;
        eprintln!("seeded {done} datums");
    }
    sqlx::query(
        "UPDATE data_sources s SET datum_seq = m.seq, delivered_seq = m.seq
         FROM (SELECT data_source_id, max(seq) AS seq FROM datums
               WHERE data_source_id >= lpad(to_hex($1::bigint), 24, '0') AND data_source_id <= lpad(to_hex($2::bigint), 24, '0')
               GROUP BY data_source_id) m
         WHERE m.data_source_id = s.id",
    )
    .bind(first as i64)
    .bind((first + sources - 1) as i64)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
