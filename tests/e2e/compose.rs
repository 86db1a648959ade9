//! docker-compose.yml cannot run here (no Docker engine), so its structure is checked: the
//! services, pinned images, and that every TIDEGATE_* variable it sets is a real setting.

use std::collections::BTreeMap;

use serde_yaml::Value;
use tidegate::Settings;
use tidegate_e2e::config_dir;

fn compose() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml")).unwrap();
    let mut v: Value = serde_yaml::from_str(&text).unwrap();
    v.apply_merge().unwrap();
    v
}

fn env_of(service: &Value) -> BTreeMap<String, String> {
    service["environment"]
        .as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.as_str().unwrap().to_owned(),
                        v.as_str().map(str::to_owned).unwrap_or_else(|| v.as_i64().unwrap().to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_has_postgres_16_serve_and_sandbox() {
    let c = compose();
    let services = c["services"].as_mapping().unwrap();
    let names: Vec<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    for want in ["postgres", "tidegate", "sandbox"] {
        assert!(names.contains(&want), "service {want} missing: {names:?}");
    }
    let pg = &c["services"]["postgres"];
    let image = pg["image"].as_str().unwrap();
    assert!(image.starts_with("postgres:16"), "pinned Postgres 16 image, got {image}");
    assert!(pg["healthcheck"].is_mapping(), "postgres has a healthcheck");

    let serve = &c["services"]["tidegate"];
    let command: Vec<&str> = serve["command"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(command, ["serve"]);
    assert_eq!(serve["depends_on"]["postgres"]["condition"], "service_healthy");
    let sandbox = &c["services"]["sandbox"];
    let command: Vec<&str> = sandbox["command"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(command[0], "sandbox");
    // The API runs the release feature set; only the simulator's image has the dev tools.
    assert!(serve["build"]["args"]["FEATURES"].is_null(), "serve is built without dev tools");
    assert_eq!(sandbox["build"]["args"]["FEATURES"], "dev-tools", "the simulator needs the dev-tools build");
    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    assert!(dockerfile.contains("--no-default-features"), "the release image has no simulator, demo or bench");
}

#[test]
fn compose_environment_names_are_real_settings() {
    let c = compose();
    for service in ["tidegate", "sandbox"] {
        let env = env_of(&c["services"][service]);
        assert!(env.contains_key("TIDEGATE_ENV"), "{service} sets TIDEGATE_ENV");
        // Loading settings with exactly these variables must succeed: an unknown TIDEGATE_*
        // name (a typo) is refused by deny_unknown_fields, and values must parse.
        let s = Settings::load_from(&config_dir(), env["TIDEGATE_ENV"].as_str(), env.clone())
            .unwrap_or_else(|e| panic!("{service}: {e}"));
        assert_eq!(s.listen.port(), 8080, "{service} listens where compose publishes");
        assert!(env.contains_key("DATABASE_URL"), "{service} gets DATABASE_URL");
    }
}
