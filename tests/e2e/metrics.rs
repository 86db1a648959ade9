//! `/metrics` on the ops listener: Prometheus text with request counters and latency histograms.

use std::collections::HashMap;

use tidegate_e2e::spawn_app;

/// A strict-enough parser for the Prometheus text format (0.0.4): every line is a comment or
/// `name{labels} value`, and every sample's family has a TYPE line.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "{line}");
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "bad name {name}");
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "bad labels in {line:?}");
        }
        let family = ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(types.contains_key(name) || types.contains_key(family), "no TYPE for {name}");
        samples.insert(series.to_owned(), value);
    }
    samples
}

#[tokio::test]
async fn requests_show_up_in_prometheus_metrics() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.http.get(app.url("/healthz")).send().await.unwrap();
    }
    let text = app.http.get(app.ops_url("/metrics")).send().await.unwrap().text().await.unwrap();
    let samples = parse(&text);
    let count = samples
        .iter()
        .find(|(k, _)| {
            k.starts_with("tidegate_http_requests_total{")
                && k.contains(r#"route="/healthz""#)
                && k.contains(r#"status="200""#)
        })
        .map(|(_, v)| *v)
        .expect("request counter for /healthz");
    assert!(count >= 3.0);
    assert!(
        samples
            .keys()
            .any(|k| k.starts_with("tidegate_http_request_duration_seconds_bucket{")
                && k.contains(r#"route="/healthz""#)),
        "latency histogram for /healthz"
    );
    assert!(samples.keys().any(|k| k.starts_with("tidegate_http_request_duration_seconds_count{")));
    // The ops listener serves only ops endpoints; the API is not there.
    let r = app.http.get(app.ops_url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}
