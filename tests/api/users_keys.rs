//! `/api/v1/users` and `/api/v1/api-keys`.

use serde_json::json;

use crate::helpers::spawn_app;

#[actix_web::test]
async fn users_create_list_get() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/v1/users",
            &json!({"name": "  Ana  ", "email": "ana@example.com"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let ana = r.json.clone();
    assert_eq!(ana["name"], "Ana");
    assert_eq!(ana["email"], "ana@example.com");
    let keys: Vec<&String> = ana
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(keys, ["id", "short_id", "name", "email", "created_at"]);
    let bo = app.post("/api/v1/users", &json!({"name": "Bo"})).await;
    assert!(bo.json["email"].is_null());
    let list = app.get_as("/api/v1/users", &app.read_key).await;
    assert_eq!(list.json["users"].as_array().map(Vec::len), Some(2));
    for id in [&ana["id"], &ana["short_id"]] {
        let r = app
            .get_as(
                &format!("/api/v1/users/{}", id.as_str().unwrap_or("")),
                &app.read_key,
            )
            .await;
        assert_eq!(r.json, ana);
    }
    assert_eq!(app.get("/api/v1/users/ZZZZZZZZ").await.status, 404);
    for bad in [
        json!({}),
        json!({"name": ""}),
        json!({"name": "A", "email": "nope"}),
        json!({"name": "A", "x": 1}),
    ] {
        let r = app.post("/api/v1/users", &bad).await;
        assert_eq!((r.status, r.code()), (400, "VALIDATION_ERROR"), "{bad}");
    }
    let r = app
        .post_as("/api/v1/users", &json!({"name": "C"}), &app.read_key)
        .await;
    assert_eq!((r.status, r.code()), (403, "INSUFFICIENT_SCOPE"));
}

#[actix_web::test]
async fn api_keys_create_list_revoke() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/v1/api-keys",
            &json!({"name": "agent", "scope": "read_only"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let key = r.json["key"].as_str().unwrap_or("").to_owned();
    assert!(key.starts_with("bb_") && key.len() == 35, "{key}");
    assert_eq!(r.json["prefix"], &key[..9]);
    assert_eq!(r.json["scope"], "read_only");
    assert!(r.json["last_used_at"].is_null() && r.json["revoked_at"].is_null());

    let used = app.get_as("/api/v1/users", &key).await;
    assert_eq!(used.status, 200);
    let list = app.get("/api/v1/api-keys").await;
    assert!(!list.text.contains(&key), "the key is never listed");
    assert!(
        !list.text.contains(&breadbox::domain::ids::sha256_hex(&key)),
        "nor its hash"
    );
    let entry = list.json["api_keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["name"] == "agent")
        .cloned()
        .expect("listed");
    assert!(entry.get("key").is_none());

    // last_used_at is written in the background, at most once a minute.
    let mut last_used = serde_json::Value::Null;
    for _ in 0..50 {
        let list = app.get("/api/v1/api-keys").await;
        last_used = list.json["api_keys"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|k| k["name"] == "agent")
            .map(|k| k["last_used_at"].clone())
            .unwrap_or_default();
        if last_used.is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(last_used.is_string(), "last_used_at recorded");

    let r = app.get_as("/api/v1/api-keys", &key).await;
    assert_eq!((r.status, r.code()), (403, "INSUFFICIENT_SCOPE"));
    let r = app
        .delete(&format!(
            "/api/v1/api-keys/{}",
            entry["short_id"].as_str().unwrap_or("")
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json["revoked_at"].is_string());
    let r = app.get_as("/api/v1/users", &key).await;
    assert_eq!((r.status, r.code()), (401, "REVOKED_API_KEY"));
    assert_eq!(app.delete("/api/v1/api-keys/ZZZZZZZZ").await.status, 404);
    for bad in [
        json!({"name": "x", "scope": "admin"}),
        json!({"name": "", "scope": "read_only"}),
        json!({"scope": "read_only"}),
    ] {
        let r = app.post("/api/v1/api-keys", &bad).await;
        assert_eq!((r.status, r.code()), (400, "VALIDATION_ERROR"), "{bad}");
    }
}

#[actix_web::test]
async fn wrong_method_on_a_known_path_is_405_with_allow() {
    let app = spawn_app().await;
    let r = crate::helpers::read(
        app.request(reqwest::Method::PUT, "/api/v1/users")
            .header("X-API-Key", &app.key)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!((r.status, r.code()), (405, "METHOD_NOT_ALLOWED"));
    assert_eq!(r.header("allow"), "GET, HEAD, POST");
    let r = app.delete("/api/v1/connections/link/AAAAAAAA").await;
    assert_eq!((r.status, r.code()), (405, "METHOD_NOT_ALLOWED"));
    assert_eq!(r.header("allow"), "GET, HEAD");
    let r = app.delete("/api/v1/nowhere").await;
    assert_eq!((r.status, r.code()), (404, "NOT_FOUND"));
}
