//! `tidegate map` as a person runs it: the real binary on the fixtures in `testdata/`.

use std::io::Write;
use std::process::{Command, Stdio};

fn shared(path: &str) -> String {
    format!("{}/../../testdata/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn a_carelink_payload_prints_one_datum_per_line_and_a_summary() {
    let (code, out, err) =
        run(&["map", "--partner", "carelink", &shared("carelink/CareLink_SampleUserV2Data.json")], None);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().filter(|d| d["type"] == "cbg").count() > 100);
    assert!(err.contains("read as carelink C"), "{err}");
    assert!(err.contains(&format!("{} datums", lines.len())), "{err}");
}

#[test]
fn dexcom_from_stdin_with_an_endpoint_and_skips_explained() {
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shared("dexcom/v2_events_docs_sample.json")).unwrap()).unwrap();
    let envelope = serde_json::json!({"records": doc["events"]}).to_string();
    let (code, out, err) = run(&["map", "--partner", "dexcom", "--endpoint", "events", "-"], Some(&envelope));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "");
    assert!(err.contains("bad_time: 3"), "{err}");
    assert!(err.contains("1 deleted at the partner"), "{err}");
}

#[test]
fn unreadable_input_exits_2_with_a_reason() {
    let (code, out, err) = run(&["map", "--partner", "dexcom", "-"], Some("{\"records\": []}"));
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(err.contains("say which Dexcom endpoint it came from"), "{err}");
    let (code, _, err) = run(&["map", "--partner", "carelink", "/nonexistent.json"], None);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent.json"), "{err}");
}
