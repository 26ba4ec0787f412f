//! Concurrent writers: no SQLITE_BUSY, no lost update, one winner per transition.

use futures_util::future::join_all;
use serde_json::json;

use crate::helpers::spawn_app;

#[actix_web::test]
async fn sixty_four_concurrent_mints_all_succeed() {
    let app = spawn_app().await;
    let user = app.create_user("Ana").await;
    let body = json!({"user_id": user["id"]});
    let results = join_all((0..64).map(|_| app.post("/api/v1/connections/link", &body))).await;
    let mut ids = Vec::new();
    for r in &results {
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(r.json["id"].as_str().unwrap_or("").to_owned());
    }
    let paths: Vec<String> = ids
        .iter()
        .map(|id| format!("/api/v1/connections/link/{id}"))
        .collect();
    let reads = join_all(paths.iter().map(|p| app.get(p))).await;
    assert!(reads.iter().all(|r| r.status == 200));
    let list = app.get("/api/v1/connections/link?limit=200").await;
    assert_eq!(list.json["sessions"].as_array().map(Vec::len), Some(64));
}

#[actix_web::test]
async fn thirty_two_concurrent_completes_record_one_transition() {
    let app = spawn_app().await;
    let s = app.mint(json!({})).await;
    let t = s["token"].as_str().unwrap_or("").to_owned();
    app.page_get(&format!("/_link/{t}/session")).await;
    let path = format!("/_link/{t}/complete");
    let results = join_all((0..32).map(|_| app.page_post(&path, None))).await;
    let wins = results.iter().filter(|r| r.status == 204).count();
    let consumed = results
        .iter()
        .filter(|r| r.status == 410 && r.code() == "CONSUMED")
        .count();
    assert_eq!((wins, consumed), (1, 31));
    let ev = app
        .get(&format!(
            "/api/v1/connections/link/{}/events",
            s["id"].as_str().unwrap_or("")
        ))
        .await;
    let completed = ev.json["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "session.completed")
        .count();
    assert_eq!(completed, 1);
}
