//! API fuzzing (issue 10): schemathesis — from PyPI, the version `.ci/run` pins — generates
//! requests from `openapi.yaml` and sends them to the running service, once as each kind of caller
//! (the patient with their own token, a clinician of the patient's clinic, an internal service)
//! and once with no token, each against freshly seeded data: a connected and polled Dexcom source
//! with datums and skipped records, a clinician's pending CareLink request, another patient's
//! source in state `error`, a live link token and a real page cursor. Known values are offered to
//! the generator through dictionaries (bound to about half of the generated values; the rest
//! stays random) so the successful paths are exercised, not only the refusals. Every phase runs
//! (examples, coverage, fuzzing, stateful); `max_examples` bounds the fuzzing phase per operation,
//! the others add their own cases. Seeds are fixed, so a run sends the same requests every time.
//!
//! Asserted, over all runs: at least [`MIN_REQUESTS`] requests answered, no 5xx, no transport
//! error, no schemathesis error, and no failure of any check in [`CHECKS`]: the spec-conformance
//! checks (documented status code, content type, response headers, response body schema), plus
//! the ones that hold the API to the document from the other side — schema-invalid input is
//! refused (`negative_data_rejection`: the patterns, enums and bounds in the document are the
//! contract, and the API enforces them), a missing or bad token is never ignored, undocumented
//! methods answer 405 with a true `Allow`.
//!
//! Left out, on purpose: `positive_data_acceptance` (every schema-valid request must succeed). The
//! document cannot say everything the API must refuse — `startDate` after `endDate`, a link token
//! expiring in the past or beyond the 1-hour limit, another user's id — and those answer a
//! documented 400/403, which is right. `object_level_authorization` needs two sets of credentials
//! in one run; the tenant matrix (`tenants.rs`) covers it.
//!
//! Reports land in `target/tmp/api-fuzz/<caller>/`: schemathesis's NDJSON event stream (what is
//! counted here), its JSON summary, its console output and the configuration it ran with.
//!
//! Without schemathesis (`pip install schemathesis==4.32.5`) the test is skipped, unless `CI` is
//! set: then it fails.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use api::Role;
use model::{Clock, UserId};
use reqwest::StatusCode;
use serde_json::{Value, json};
use store::audit::Actor;
use store::data_sources::SourceError;
use tidegate_e2e::{World, spawn_world};

use crate::connect::{ALICE, BOB, connect_dexcom, link};

/// The version `.ci/run` installs; keep the two in step.
const SCHEMATHESIS_VERSION: &str = "4.32.5";
const MIN_REQUESTS: usize = 5_000;
const C1: &str = "5f1e8a0b9c7d6e5f4a3b2c1d";
const CLINICIAN: &str = "1111111111";

/// The checks run and asserted (schemathesis's names).
const CHECKS: [&str; 10] = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "ignored_auth",
    "unsupported_method",
    "allow_header_conformance",
];

enum Who {
    Patient,
    Clinician,
    Service,
    Nobody,
}

/// One schemathesis run: who calls, how many examples per operation, the seed.
struct Run {
    name: &'static str,
    who: Who,
    max_examples: u32,
    seed: u64,
}

const RUNS: [Run; 4] = [
    Run { name: "patient", who: Who::Patient, max_examples: 75, seed: 101 },
    Run { name: "clinician", who: Who::Clinician, max_examples: 75, seed: 102 },
    Run { name: "service", who: Who::Service, max_examples: 75, seed: 103 },
    Run { name: "no token", who: Who::Nobody, max_examples: 40, seed: 104 },
];

/// What one run saw, from schemathesis's NDJSON events.
#[derive(Default)]
struct Tally {
    requests: usize,
    by_class: [usize; 6],
    no_response: usize,
    /// check → failures.
    failures: BTreeMap<String, usize>,
    /// One line per distinct (check, operation, title), with an example.
    examples: BTreeMap<(String, String, String), String>,
    errors: Vec<String>,
}

/// One finished run.
struct Outcome {
    run: &'static Run,
    tally: Tally,
    secs: f64,
    status: std::process::ExitStatus,
    output: String,
    dir: PathBuf,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_contract_violation() {
    if !schemathesis_ready() {
        return;
    }
    let started = Instant::now();
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("api-fuzz");
    let mut outcomes = Vec::new();
    for run in &RUNS {
        let w = spawn_world(&[]).await;
        let seeded = seed(&w).await;
        let dir = root.join(run.name.replace(' ', "-"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("report directory");
        let token = match run.who {
            Who::Patient => Some(w.app.patient_token(ALICE)),
            Who::Clinician => Some(w.app.token(Role::Clinician, CLINICIAN, &[C1])),
            Who::Service => Some(w.app.service_token()),
            Who::Nobody => None,
        };
        let t = Instant::now();
        let (status, output) = run_schemathesis(&w, &seeded, run, token, &dir).await;
        let secs = t.elapsed().as_secs_f64();
        let tally = tally(&dir.join("events.ndjson"));
        eprintln!("api_fuzz: {}: {} requests in {secs:.1}s (reports: {})", run.name, tally.requests, dir.display());
        outcomes.push(Outcome { run, tally, secs, status, output, dir });
        w.app.stop().await;
    }

    let table = summary(&outcomes);
    eprintln!("{table}");
    eprintln!("api_fuzz: {:.1}s in all", started.elapsed().as_secs_f64());

    let mut problems = Vec::new();
    for o in &outcomes {
        let (name, t) = (o.run.name, &o.tally);
        let before = problems.len();
        problems.extend(t.errors.iter().map(|e| format!("[{name}] schemathesis error: {e}")));
        problems.extend(t.examples.values().map(|line| format!("[{name}] {line}")));
        if t.by_class[5] > 0 {
            problems.push(format!("[{name}] {} responses were 5xx", t.by_class[5]));
        }
        if t.no_response > 0 {
            problems.push(format!("[{name}] {} requests got no response", t.no_response));
        }
        // Nothing counted, yet schemathesis failed: show why (usage, schema or internal error).
        if problems.len() == before && !o.status.success() {
            let lines: Vec<&str> = o.output.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            problems.push(format!("[{name}] schemathesis exited {} ({}):\n{tail}", o.status, o.dir.display()));
        }
    }
    assert!(problems.is_empty(), "{table}\n{} problem(s):\n{}", problems.len(), problems.join("\n"));
    let total: usize = outcomes.iter().map(|o| o.tally.requests).sum();
    assert!(total >= MIN_REQUESTS, "{table}\nonly {total} requests were sent; at least {MIN_REQUESTS} expected");
}

/// Installed at the pinned version: true. Missing: false (skip) outside CI, a failure in CI.
fn schemathesis_ready() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import schemathesis; print(schemathesis.__version__)"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    match found {
        None if in_ci => panic!(
            "schemathesis is not installed and CI is set: `.ci/run` installs it \
             (python3 -m pip install schemathesis=={SCHEMATHESIS_VERSION})"
        ),
        None => {
            eprintln!(
                "SKIPPED api_fuzz: schemathesis is not installed (python3 -m pip install \
                 schemathesis=={SCHEMATHESIS_VERSION}; `.ci/run` installs it, and with CI set this test fails \
                 without it)"
            );
            false
        }
        Some(v) => {
            assert_eq!(
                v, SCHEMATHESIS_VERSION,
                "schemathesis {v} is installed; this test is pinned to {SCHEMATHESIS_VERSION} \
                 (python3 -m pip install schemathesis=={SCHEMATHESIS_VERSION})"
            );
            true
        }
    }
}

/// The ids a run offers the generator.
struct Seeded {
    sources: Vec<String>,
    link_token: String,
    cursor: String,
    expiry: String,
}

/// Two patients of clinic C1. ALICE (the patient caller): Dexcom connected and polled (datums,
/// and records skipped on import), CareLink requested by her clinician (pending). BOB: a Dexcom
/// source in state `error` (a confirmed revocation).
async fn seed(w: &World) -> Seeded {
    for user in [ALICE, BOB] {
        let r = w
            .app
            .http
            .post(w.sandbox.url("/admin/clinic/patients"))
            .json(&json!({"clinicId": C1, "userId": user}))
            .send()
            .await
            .expect("the simulator answers");
        assert!(r.status().is_success(), "seeding the clinic: {}", r.status());
    }
    let (alice, bob) = (UserId::parse(ALICE).expect("static id"), UserId::parse(BOB).expect("static id"));
    assert_eq!(connect_dexcom(w, ALICE, "dexcom-001").await.status(), StatusCode::OK);
    let dexcom = w.app.store.list_data_sources(&alice).await.expect("sources")[0].id.clone();
    w.app.poller().poll(&dexcom, None, None).await.expect("the first poll imports data");
    assert_eq!(w.app.ask_to_connect(CLINICIAN, C1, ALICE, "carelink").await, StatusCode::NO_CONTENT);
    assert_eq!(connect_dexcom(w, BOB, "dexcom-002").await.status(), StatusCode::OK);
    let bob_dexcom = w.app.store.list_data_sources(&bob).await.expect("sources")[0].id.clone();
    let error = SourceError {
        code: "authorization_revoked".into(),
        message: "Reconnect your Dexcom account.".into(),
        time: w.app.clock.now(),
    };
    w.app.store.fail(&Actor::system(), &bob_dexcom, &error, None, w.app.clock.now()).await.expect("fail");
    let mut sources = Vec::new();
    for user in [&alice, &bob] {
        sources.extend(w.app.store.list_data_sources(user).await.expect("sources").iter().map(|s| s.id.to_string()));
    }
    assert_eq!(sources.len(), 3, "Alice's connected Dexcom and pending CareLink, Bob's Dexcom in error");
    let link_token = link(w, ALICE, "dexcom").await;
    // A real cursor: the first page of one datum names the next.
    let r = w
        .app
        .http
        .get(w.app.url(&format!("/v1/users/{ALICE}/data?limit=1")))
        .bearer_auth(w.app.patient_token(ALICE))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(r.status(), StatusCode::OK);
    let next = r.headers()["link"].to_str().expect("ASCII").to_owned();
    let next = &next[1..next.find('>').expect("a Link target")];
    let cursor = reqwest::Url::parse(&format!("http://x{next}"))
        .expect("a URL")
        .query_pairs()
        .find(|(k, _)| k == "cursor")
        .expect("a cursor")
        .1
        .into_owned();
    let expiry = (w.app.clock.now() + chrono::Duration::minutes(30)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Seeded { sources, link_token, cursor, expiry }
}

/// schemathesis's configuration for one run: no cache or example database (runs depend only on
/// the seed), and dictionaries of real values for the parameters that name things.
fn config(s: &Seeded) -> String {
    let list = |v: &[&str]| v.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>().join(", ");
    let sources: Vec<&str> = s.sources.iter().map(String::as_str).collect();
    format!(
        r#"[cache]
enabled = false

[generation]
database = "none"

[dictionaries.users]
values = [{users}]
[dictionaries.clinics]
values = [{clinics}]
[dictionaries.providers]
values = [{providers}]
[dictionaries.sources]
values = [{sources}]
[dictionaries.link_tokens]
values = [{link_token}]
[dictionaries.types]
values = [{types}]
[dictionaries.starts]
values = [{starts}]
[dictionaries.ends]
values = [{ends}]
[dictionaries.limits]
values = [1, 7, 100]
[dictionaries.cursors]
values = [{cursor}]
[dictionaries.scopes]
values = ["imported", "all"]
[dictionaries.expiries]
values = [{expiry}]
[dictionaries.regions]
values = ["us", "eu", "jp"]
[dictionaries.link_paths]
values = ["/v1/oauth/dexcom", "/v1/oauth/carelink"]

[parameters]
"path.userId" = {{ dictionary = "users", probability = 0.5 }}
"path.patientId" = {{ dictionary = "users", probability = 0.5 }}
"path.clinicId" = {{ dictionary = "clinics", probability = 0.5 }}
"path.provider" = {{ dictionary = "providers", probability = 0.5 }}
"path.id" = {{ dictionary = "sources", probability = 0.5 }}
"query.restricted_token" = {{ dictionary = "link_tokens", probability = 0.5 }}
"query.region" = {{ dictionary = "regions", probability = 0.5 }}
"query.type" = {{ dictionary = "types", probability = 0.5 }}
"query.startDate" = {{ dictionary = "starts", probability = 0.5 }}
"query.endDate" = {{ dictionary = "ends", probability = 0.5 }}
"query.limit" = {{ dictionary = "limits", probability = 0.5 }}
"query.cursor" = {{ dictionary = "cursors", probability = 0.3 }}
"query.scope" = {{ dictionary = "scopes", probability = 0.5 }}
"body.expirationTime" = {{ dictionary = "expiries", probability = 0.5 }}
"body.paths[*]" = {{ dictionary = "link_paths", probability = 0.5 }}
"#,
        users = list(&[ALICE, ALICE, BOB]),
        clinics = list(&[C1]),
        providers = list(&["dexcom", "carelink"]),
        sources = list(&sources),
        link_token = list(&[&s.link_token]),
        types = list(&["cbg", "cbg,bolus", "food,insulin", "cgmSettings,deviceEvent"]),
        starts = list(&["2026-02-01T00:00:00Z", "2026-03-01T00:00:00.000Z"]),
        ends = list(&["2026-03-03T00:00:00Z", "2026-03-08T00:00:00.000Z"]),
        cursor = list(&[&s.cursor]),
        expiry = list(&[&s.expiry]),
    )
}

/// Run schemathesis against the world's app; its exit status and console output.
async fn run_schemathesis(
    w: &World,
    seeded: &Seeded,
    run: &Run,
    token: Option<String>,
    dir: &Path,
) -> (std::process::ExitStatus, String) {
    std::fs::write(dir.join("schemathesis.toml"), config(seeded)).expect("write the configuration");
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
    let mut args: Vec<String> = [
        "-m",
        "schemathesis.cli",
        "--config-file",
        "schemathesis.toml",
        "run",
        spec,
        "--url",
        &w.app.url(""),
        // One worker: generation is Python-bound, so a second thread was measured slower on two
        // cores, and it races inside Hypothesis ("dictionary changed size during iteration").
        "--workers",
        "1",
        "--max-examples",
        &run.max_examples.to_string(),
        "--seed",
        &run.seed.to_string(),
        "--checks",
        &CHECKS.join(","),
        "--request-timeout",
        "20",
        "--report",
        "ndjson,json",
        "--report-dir",
        ".",
        "--report-ndjson-path",
        "events.ndjson",
        "--report-json-path",
        "summary.json",
        "--no-color",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if let Some(t) = token {
        args.extend(["--header".to_owned(), format!("Authorization: Bearer {t}")]);
    }
    let cwd = dir.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3").args(&args).current_dir(&cwd).env("NO_COLOR", "1").output()
    })
    .await
    .expect("the runner thread")
    .expect("python3 runs schemathesis");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::write(dir.join("output.txt"), &text);
    (out.status, text)
}

/// Count what schemathesis recorded: every request it sent with its response, every check.
fn tally(events: &Path) -> Tally {
    let mut t = Tally::default();
    let text = std::fs::read_to_string(events)
        .unwrap_or_else(|e| panic!("schemathesis wrote no event stream at {}: {e}", events.display()));
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let event: Value = serde_json::from_str(line).expect("an NDJSON event");
        for kind in ["NonFatalError", "FatalError"] {
            if let Some(e) = event.get(kind) {
                let label = e["label"].as_str().unwrap_or("-");
                let what = match (e["value"]["type"].as_str(), e["value"]["message"].as_str()) {
                    (Some(ty), Some(message)) => format!("{ty}: {message}"),
                    _ => clip(&e.to_string(), 400),
                };
                t.errors.push(format!("{kind} {label}: {what}"));
            }
        }
        let Some(finished) = event.get("ScenarioFinished") else { continue };
        let recorder = &finished["recorder"];
        let label = recorder["label"].as_str().unwrap_or("?");
        let empty = serde_json::Map::new();
        let interactions = recorder["interactions"].as_object().unwrap_or(&empty);
        for i in interactions.values() {
            match i["response"]["status_code"].as_u64() {
                Some(code) => {
                    t.requests += 1;
                    t.by_class[(code / 100).min(5) as usize] += 1;
                }
                None => t.no_response += 1,
            }
        }
        for (case, checks) in recorder["checks"].as_object().unwrap_or(&empty) {
            for c in checks.as_array().into_iter().flatten() {
                if c["status"].as_str() == Some("success") || c["status"].as_str() == Some("skip") {
                    continue;
                }
                let name = c["name"].as_str().unwrap_or("?").to_owned();
                *t.failures.entry(name.clone()).or_default() += 1;
                let failure = &c["failure_info"]["failure"];
                let title = failure["title"].as_str().unwrap_or("?").to_owned();
                let operation = failure["operation"].as_str().unwrap_or(label).to_owned();
                let message = failure["message"].as_str().unwrap_or_default();
                let interaction = interactions.get(case).unwrap_or(&Value::Null);
                let status = interaction["response"]["status_code"].as_u64();
                t.examples.entry((name.clone(), operation.clone(), title.clone())).or_insert_with(|| {
                    format!(
                        "{name}: {operation}: {title}: {} — e.g. {} {} → {}",
                        clip(message, 600),
                        interaction["request"]["method"].as_str().unwrap_or("?"),
                        clip(interaction["request"]["uri"].as_str().unwrap_or("?"), 300),
                        status.map_or("no response".to_owned(), |s| s.to_string()),
                    )
                });
            }
        }
    }
    t
}

fn clip(s: &str, n: usize) -> String {
    let s = s.replace('\n', " ⏎ ");
    if s.chars().count() <= n { s } else { format!("{}…", s.chars().take(n).collect::<String>()) }
}

/// The table printed after the runs: requests and responses per caller, failures by check.
fn summary(outcomes: &[Outcome]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\nschemathesis {SCHEMATHESIS_VERSION} against openapi.yaml");
    let _ = writeln!(
        s,
        "{:<10} {:>8} {:>6} {:>6} {:>6} {:>6} {:>7} {:>6}  failures by check",
        "caller", "requests", "2xx", "3xx", "4xx", "5xx", "no resp", "secs"
    );
    let mut total = Tally::default();
    let mut secs = 0.0;
    for o in outcomes {
        let t = &o.tally;
        secs += o.secs;
        let _ = writeln!(
            s,
            "{:<10} {:>8} {:>6} {:>6} {:>6} {:>6} {:>7} {:>6.1}  {}",
            o.run.name,
            t.requests,
            t.by_class[2],
            t.by_class[3],
            t.by_class[4],
            t.by_class[5],
            t.no_response,
            o.secs,
            failures(&t.failures)
        );
        total.requests += t.requests;
        for (i, n) in t.by_class.iter().enumerate() {
            total.by_class[i] += n;
        }
        total.no_response += t.no_response;
        for (k, n) in &t.failures {
            *total.failures.entry(k.clone()).or_default() += n;
        }
    }
    let _ = writeln!(
        s,
        "{:<10} {:>8} {:>6} {:>6} {:>6} {:>6} {:>7} {:>6.1}  {}",
        "total",
        total.requests,
        total.by_class[2],
        total.by_class[3],
        total.by_class[4],
        total.by_class[5],
        total.no_response,
        secs,
        failures(&total.failures)
    );
    let _ = writeln!(s, "checks: {}", CHECKS.join(", "));
    s
}

fn failures(f: &BTreeMap<String, usize>) -> String {
    if f.is_empty() {
        return "none".to_owned();
    }
    f.iter().map(|(k, n)| format!("{k}={n}")).collect::<Vec<_>>().join(" ")
}
