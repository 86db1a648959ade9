//! `tidegate demo` as a newcomer meets it: the real binary creates its database, starts
//! everything, prints its steps — and following them connects a source, data arrives and the
//! clinic stand-in hears about it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::connect::{Browser, at_dexcom, location};
use crate::workers::tidegate_bin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_comes_up_and_its_printed_steps_work() {
    let db = format!("tidegate_demo_{}", uuid::Uuid::new_v4().simple());
    let server = testkit::db::server_url();
    let mut child = Command::new(tidegate_bin())
        .args(["demo", "--fast", "--sandbox-listen", "127.0.0.1:0"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TIDEGATE_CONFIG_DIR", tidegate_e2e::config_dir())
        .env("DATABASE_URL", testkit::db::with_database(&server, &db))
        .env("TIDEGATE_LISTEN", "127.0.0.1:0")
        .env("TIDEGATE_OPS_LISTEN", "127.0.0.1:0")
        .env("TIDEGATE_LOG__FILTER", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tidegate demo starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !printed.iter().any(|l: &String| l.contains("Ctrl-C stops everything")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => printed.push(l),
            Err(_) => panic!("the demo printed no steps in time: {printed:#?}"),
        }
    }
    let find = |needle: &str| -> String {
        printed
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {printed:#?}"))
            .trim()
            .to_owned()
    };
    assert!(find("DEMO SETTING").contains("Never use this in production"));
    let authorize = find("restricted_token=");
    let patient = find("export PATIENT=").trim_start_matches("export PATIENT=").to_owned();
    let api = authorize.split("/v1/oauth").next().unwrap().to_owned();
    let sim = find("simulator").split_whitespace().nth(1).unwrap().to_owned();

    // Step 1, as a person would click it.
    let mut b = Browser::new();
    let r = b.get(&format!("{authorize}&region=us")).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let signin = location(&r);
    let callback = at_dexcom(&mut b, &signin, "dexcom-001", true).await;
    let done = b.get(&callback).await;
    assert_eq!(done.status(), StatusCode::OK);
    assert!(done.text().await.unwrap().to_lowercase().contains("connected"));

    // Step 2: the first poll runs within seconds; data arrives.
    let http = reqwest::Client::new();
    let data_url = format!("{api}/v1/users/{}/data?type=cbg&limit=5", tidegate::demo::PATIENT);
    let deadline = Instant::now() + Duration::from_secs(60);
    let cbg = loop {
        let page: Vec<Value> = http.get(&data_url).bearer_auth(&patient).send().await.unwrap().json().await.unwrap();
        if page.len() == 5 {
            break page;
        }
        assert!(Instant::now() < deadline, "no data within a minute");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(cbg.iter().all(|d| d["type"] == "cbg"));

    // Step 3: the clinic stand-in was told the source is connected.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = http.get(format!("{sim}/admin/clinic/requests")).send().await.unwrap().json().await.unwrap();
        let told = v["received"].as_array().unwrap().iter().any(|r| {
            r["userId"] == tidegate::demo::PATIENT && r["status"] == 200 && r["body"][0]["state"] == "connected"
        });
        if told {
            break;
        }
        assert!(Instant::now() < deadline, "the clinic never heard: {v}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Ctrl-C (SIGINT) stops it cleanly.
    let _ = Command::new("kill").arg("-INT").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the demo did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&server).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")))
        .execute(&mut conn)
        .await
        .unwrap();
}
