//! The OpenAPI document (no root needed): the committed `docs/openapi.json`
//! is the one the code generates, every route of the router is documented
//! with its errors in the JSON error body, and the extractors' rejections
//! (query, path, body) answer that body too.

use std::path::PathBuf;

use serde_json::Value;

const REGENERATE: &str = "regenerate it with `UPDATE_OPENAPI=1 cargo test -p hivemind --test openapi` \
                          (or `hivemind openapi > docs/openapi.json`) and commit it";

fn document() -> Value {
    serde_json::to_value(hivemind::api::openapi::document()).expect("the document serialises")
}

#[test]
fn committed_document_is_the_generated_one() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let generated = hivemind::api::openapi::document_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write docs/openapi.json");
        eprintln!("wrote {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || "one is a prefix of the other".to_string(),
                |i| format!("first difference at line {}", i + 1),
            );
        panic!("docs/openapi.json differs from the generated document ({line}): {REGENERATE}");
    }
}

#[test]
fn every_route_is_documented_and_nothing_else() {
    let doc = document();
    let routes = hivemind::api::routes();
    let error_ref = "#/components/schemas/ErrorBody";
    for (method, path) in &routes {
        let operation = &doc["paths"][path][method.as_str().to_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {path} is served but not in the OpenAPI document: give its handler a \
             #[utoipa::path] and list it in hivemind/src/api/openapi.rs; then {REGENERATE}"
        );
        let responses = operation["responses"]
            .as_object()
            .expect("an operation has responses");
        assert!(
            responses.contains_key("default"),
            "{method} {path}: no default (error) response"
        );
        for (status, response) in responses {
            if status == "default" || status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"], error_ref,
                    "{method} {path}: the {status} response is not the JSON error body"
                );
            }
        }
    }
    let documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("a path item")
                .keys()
                .map(|method| (method.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    for (method, path) in &documented {
        assert!(
            routes
                .iter()
                .any(|(m, p)| m.as_str() == method && p == path),
            "{method} {path} is documented but the router does not serve it"
        );
    }
    assert_eq!(documented.len(), routes.len());
}

#[test]
fn requests_refuse_unknown_fields() {
    let doc = document();
    for name in [
        "DeployRequest",
        "ScaleRequest",
        "RestartRequest",
        "CreateVolume",
        "JoinRequest",
        "PullRequest",
        "NetworkPolicy",
    ] {
        let body = serde_json::json!({"name": "x", "image": "x", "replicas": 1, "address": "x",
            "selector": {}, "ingress_rules": [], "unexpected": 1});
        let parsed: Result<(), String> = match name {
            "DeployRequest" => serde_json::from_value::<hivemind::contract::DeployRequest>(body)
                .map(drop)
                .map_err(|e| e.to_string()),
            "ScaleRequest" => serde_json::from_value::<hivemind::contract::ScaleRequest>(body)
                .map(drop)
                .map_err(|e| e.to_string()),
            "RestartRequest" => serde_json::from_value::<hivemind::contract::RestartRequest>(body)
                .map(drop)
                .map_err(|e| e.to_string()),
            "CreateVolume" => serde_json::from_value::<hivemind::contract::CreateVolume>(body)
                .map(drop)
                .map_err(|e| e.to_string()),
            "JoinRequest" => serde_json::from_value::<hivemind::contract::JoinRequest>(body)
                .map(drop)
                .map_err(|e| e.to_string()),
            "PullRequest" => serde_json::from_value::<hivemind::contract::PullRequest>(body)
                .map(drop)
                .map_err(|e| e.to_string()),
            _ => serde_json::from_value::<hivemind::contract::NetworkPolicy>(body)
                .map(drop)
                .map_err(|e| e.to_string()),
        };
        let error = parsed.expect_err(name);
        assert!(error.contains("unknown field"), "{name}: {error}");
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{name} is not in the document"
        );
    }
}
