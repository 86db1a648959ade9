//! The real binary, as an operator runs it: `token`, `migrate`, `serve` (with SIGTERM) and the
//! configuration errors.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_tidegate");

fn tidegate() -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TIDEGATE_CONFIG_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/../../config"))
        .env("TIDEGATE_ENV", "dev");
    c
}

#[test]
fn token_prints_only_a_jwt() {
    let out = tidegate().args(["token", "--sub", "0123456789", "--role", "patient"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].split('.').count(), 3, "a JWT: {stdout}");
    let clinician = tidegate()
        .args([
            "token",
            "--sub",
            "abcdef0123",
            "--role",
            "clinician",
            "--clinic",
            "5f1e8a0b9c7d6e5f4a3b2c1d",
            "--clinic",
            "5f1e8a0b9c7d6e5f4a3b2c1e",
        ])
        .output()
        .unwrap();
    assert!(clinician.status.success());
}

#[test]
fn token_validates_ids() {
    for (args, needle) in [
        (vec!["--sub", "alice", "--role", "patient"], "--sub"),
        (vec!["--sub", "abcdef0123", "--role", "clinician", "--clinic", "nope"], "--clinic"),
        (vec!["--sub", "abcdef0123", "--role", "clinician"], "--clinic"),
        (vec!["--sub", "0123456789", "--role", "patient", "--clinic", "5f1e8a0b9c7d6e5f4a3b2c1d"], "--clinic"),
        (vec!["--sub", "bad service!", "--role", "service"], "--sub"),
    ] {
        let out = tidegate().arg("token").args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(out.stdout.is_empty(), "nothing on stdout on failure");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_bad_setting_stops_startup_with_one_line_naming_it() {
    let out = tidegate().env("TIDEGATE_OPS_LISTEN", "nowhere").arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("ops_listen"), "{stderr}");
    let out = tidegate().env("TIDEGATE_ENV", "production").arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8(out.stderr).unwrap().lines().count(), 1);
}

#[test]
fn help_documents_every_role() {
    let out = tidegate().arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for cmd in ["migrate", "serve", "worker", "report", "doctor", "sandbox", "token", "keys"] {
        assert!(help.contains(cmd), "{cmd} missing from --help");
    }
    let keys = tidegate().args(["keys", "generate", "--kid", "k2026"]).output().unwrap();
    let entry = String::from_utf8(keys.stdout).unwrap();
    assert!(entry.trim().starts_with("k2026:"), "{entry}");
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_then_serve_then_sigterm() {
    let db = TestDb::create().await;
    let with_db = |c: &mut Command| {
        c.env("DATABASE_URL", &db.url).env("TIDEGATE_LISTEN", "127.0.0.1:0").env("TIDEGATE_OPS_LISTEN", "127.0.0.1:0");
    };
    let mut migrate = tidegate();
    with_db(&mut migrate);
    let out = migrate.arg("migrate").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let mut serve = tidegate();
    with_db(&mut serve);
    let mut child = serve
        .env("TIDEGATE_LOG__FORMAT", "json")
        .arg("serve")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The "serving" log line carries the bound addresses.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut public = None;
    let mut seen = Vec::new();
    while public.is_none() && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["message"] == "tidegate serving"
            {
                public = v["public"].as_str().map(str::to_owned);
            }
            seen.push(line);
        }
    }
    let public = public.unwrap_or_else(|| panic!("no serving line in {seen:#?}"));
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..50 {
        if http.get(format!("http://{public}/readyz")).send().await.map(|r| r.status() == 200).unwrap_or(false) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "/readyz 200 after migrate && serve");
    // SIGTERM: drains and exits 0.
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_passes_on_a_sound_database_and_fails_on_a_broken_one() {
    let db = TestDb::create().await;
    let run = |args: &[&str]| tidegate().env("DATABASE_URL", &db.url).args(args).output().unwrap();
    assert!(run(&["migrate"]).status.success());
    let ok = run(&["doctor"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    // Break it on purpose: a connected source without tokens or schedule.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
    sqlx::query(
        "INSERT INTO data_sources (id, user_id, provider, state, created_time, modified_time)
         VALUES ('0123456789abcdef01234567', '0123456789', 'dexcom', 'connected', now(), now())",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let broken = run(&["doctor"]);
    assert!(!broken.status.success());
    let out = String::from_utf8_lossy(&broken.stdout);
    assert!(out.contains("0123456789abcdef01234567") && out.contains("connected ⇒ provider session exists"), "{out}");
    // Platform delivery: a refused datum and a delivery mark without a data set are reported.
    for sql in [
        "INSERT INTO datum_rejections (data_source_id, user_id, datum_id, seq, type, reason, rejected_time)
         VALUES ('0123456789abcdef01234567', '0123456789', '0123456789abcdef0123456789abcdef', 7, 'cbg',
                 '/units: not a unit', now())",
        "UPDATE data_sources SET datum_seq = 9, delivered_seq = 7 WHERE id = '0123456789abcdef01234567'",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    let out = run(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rejected by the platform: 1 cbg datums (e.g. \"/units: not a unit\")"), "{text}");
    assert!(text.contains("delivered, but names no platform data set"), "{text}");
    assert!(text.contains("backlog: 0 datums in 1 sources"), "{text}");
}
