//! Mapping cost, from response bytes to validated datums: a 24 h CareLink display/message
//! payload and a 30-day Dexcom `egvs` response (simulated people, real wire formats).
//!
//! `cargo bench -p tidegate-partners --bench mapping`

use chrono::{DateTime, Duration, Utc};
use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use model::UserId;
use tidegate_partners::fetch::Batch;

fn at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-10T12:00:00Z").expect("static time").to_utc()
}

fn carelink_24h(c: &mut Criterion) {
    let people = sandbox::people::population(7, 0, 1);
    let p = &people[0];
    let body = serde_json::to_vec(&sandbox::carelink::display::patient_data(p, at())).expect("json");
    let user = UserId::parse("0123456789").expect("user");
    let mut g = c.benchmark_group("carelink");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("display_message_24h", |b| {
        b.iter(|| {
            let doc: serde_json::Value = serde_json::from_slice(black_box(&body)).expect("json");
            let mut batch = Batch::default();
            tidegate_partners::carelink::map::map_payload(&user, &doc, &mut batch).expect("maps");
            assert!(batch.datums.len() > 500);
            batch
        })
    });
    g.finish();
}

fn dexcom_30d_egvs(c: &mut Criterion) {
    let people = sandbox::people::population(7, 1, 0);
    let p = &people[0];
    let (start, end) = (at() - Duration::days(30), at());
    let records = sandbox::dexcom::records::egvs(p, start, end, end, false);
    let body = serde_json::to_vec(&serde_json::json!({
        "recordType": "egv", "recordVersion": "3.0", "userId": "sim", "records": records
    }))
    .expect("json");
    let user = UserId::parse("0123456789").expect("user");
    let mut g = c.benchmark_group("dexcom");
    g.throughput(Throughput::Elements(records.len() as u64));
    g.bench_function("egvs_30d", |b| {
        b.iter(|| {
            let doc: serde_json::Value = serde_json::from_slice(black_box(&body)).expect("json");
            let mut batch = Batch::default();
            tidegate_partners::dexcom::fetch::map_records(&user, "egvs", &doc, start, end, &mut batch);
            assert!(batch.datums.len() > 8_000);
            batch
        })
    });
    // What the poller does next: each datum to the JSON stored.
    let doc: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let mut batch = Batch::default();
    tidegate_partners::dexcom::fetch::map_records(&user, "egvs", &doc, start, end, &mut batch);
    g.bench_function("egvs_30d_to_stored_json", |b| {
        b.iter(|| batch.datums.iter().map(|d| d.to_json()).collect::<Vec<_>>())
    });
    g.finish();
}

criterion_group!(benches, carelink_24h, dexcom_30d_egvs);
criterion_main!(benches);
