//! openapi.yaml describes every route the API serves, and nothing it does not.

use std::collections::BTreeSet;

use serde_yaml::Value;

/// The route patterns `model::paths` names (`pub const NAME: &str = "…";`).
fn path_constants() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crates/model/src/paths.rs")).unwrap();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| {
            let (name, rest) = l.split_once(": &str = \"")?;
            Some((name.to_owned(), rest.split('"').next()?.to_owned()))
        })
        .collect()
}

/// (METHOD, path) of every `.route(PATH, method(…).method(…))` in the API's route modules, PATH a
/// string literal or a `model::paths` constant.
fn routes_in_code() -> BTreeSet<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/crates/api/src/routes");
    let constants = path_constants();
    assert!(constants.len() >= 4, "model::paths constants: {constants:?}");
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for chunk in text.split(".route(").skip(1) {
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
            let Some((first, handlers)) = args.split_once(',') else { continue };
            let first = first.trim();
            let path = if let Some(literal) = first.strip_prefix('"') {
                literal.trim_end_matches('"').to_owned()
            } else if first.starts_with("paths::") || first.starts_with("model::paths::") {
                let name = first.rsplit("::").next().unwrap_or(first);
                match constants.iter().find(|(n, _)| n == name) {
                    Some((_, value)) => value.clone(),
                    None => panic!("{first} is not a model::paths constant"),
                }
            } else {
                continue;
            };
            // The ops listener's `/metrics` (its own router and port) is not the public API.
            if path == "/metrics" {
                continue;
            }
            for method in ["get", "post", "put", "delete", "patch"] {
                let called = handlers.trim_start_matches([',', ' ', '\n']).starts_with(&format!("{method}("))
                    || handlers.contains(&format!(".{method}("))
                    || handlers.contains(&format!(", {method}("));
                if called {
                    out.insert((method.to_uppercase(), path.clone()));
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
