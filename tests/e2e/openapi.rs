//! openapi.yaml describes every route the API serves, and nothing it does not.

use std::collections::BTreeSet;

use serde_yaml::Value;

/// (METHOD, path) of every `.route("…", method(…).method(…))` in the API's route modules.
fn routes_in_code() -> BTreeSet<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/crates/api/src/routes");
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for chunk in text.split(".route(").skip(1) {
            let Some(path) = chunk.strip_prefix('"').and_then(|c| c.split('"').next()) else { continue };
            // The call's arguments: up to the parenthesis that closes `.route(`.
            let mut depth = 1;
            let args: String = chunk
                .chars()
                .take_while(|c| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth > 0
                })
                .collect();
            let handlers = &args[path.len() + 2..];
            for method in ["get", "post", "put", "delete", "patch"] {
                let called = handlers.trim_start_matches([',', ' ', '\n']).starts_with(&format!("{method}("))
                    || handlers.contains(&format!(".{method}("))
                    || handlers.contains(&format!(", {method}("));
                if called {
                    out.insert((method.to_uppercase(), path.to_owned()));
                }
            }
        }
    }
    out
}

fn routes_in_spec() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    let doc: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(doc["openapi"].as_str().unwrap(), "3.1.0");
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_mapping().unwrap() {
        for (method, op) in item.as_mapping().unwrap() {
            let method = method.as_str().unwrap();
            if ["get", "post", "put", "delete", "patch"].contains(&method) {
                assert!(op["responses"].is_mapping(), "{method} {path:?} lists its responses");
                out.insert((method.to_uppercase(), path.as_str().unwrap().to_owned()));
            }
        }
    }
    out
}

#[test]
fn every_route_is_described_and_nothing_else() {
    let code = routes_in_code();
    let spec = routes_in_spec();
    assert!(code.len() >= 15, "the route scan found {code:?}");
    let missing: Vec<_> = code.difference(&spec).collect();
    let extra: Vec<_> = spec.difference(&code).collect();
    assert!(missing.is_empty(), "routes missing from openapi.yaml: {missing:?}");
    assert!(extra.is_empty(), "openapi.yaml describes routes the API does not serve: {extra:?}");
}
