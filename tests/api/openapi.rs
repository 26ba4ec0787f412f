//! `/openapi.json`: it describes exactly the registered `/api/v1` routes,
//! every documented route answers, and real responses carry what the
//! documented schemas require.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;

use crate::helpers::{read, spawn_app, spawn_app_with, with_plaid, Resp, TestApp};

const API: &str = "/api/v1";
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Fetch the served document and check how it is served.
async fn fetch_doc(app: &TestApp) -> Value {
    let r = read(
        app.request(reqwest::Method::GET, "/openapi.json")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.header("content-type").starts_with("application/json"),
        "content-type is {:?}",
        r.header("content-type")
    );
    assert_eq!(
        r.text,
        breadbox::api::health::OPENAPI,
        "served verbatim from assets/openapi.json"
    );
    assert!(r.json.is_object(), "/openapi.json is not a JSON object");
    assert_eq!(r.json["openapi"], "3.1.0");
    r.json
}

/// One documented operation.
struct Op<'a> {
    method: String,
    path: String,
    op: &'a Value,
}

/// Every documented operation under `/api/v1`.
fn api_ops(doc: &Value) -> Vec<Op<'_>> {
    let paths = doc["paths"].as_object().expect("paths is an object");
    let mut out = Vec::new();
    for (path, item) in paths {
        if !path.starts_with(&format!("{API}/")) {
            continue;
        }
        let item = item.as_object().expect("path item is an object");
        for (method, op) in item {
            if METHODS.contains(&method.as_str()) {
                out.push(Op {
                    method: method.to_ascii_uppercase(),
                    path: path.clone(),
                    op,
                });
            }
        }
    }
    out
}

fn documented_statuses(op: &Value) -> BTreeSet<String> {
    op["responses"]
        .as_object()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default()
}

#[actix_web::test]
async fn document_lists_exactly_the_registered_routes() {
    let app = spawn_app().await;
    let doc = fetch_doc(&app).await;
    let documented: BTreeSet<(String, String)> = api_ops(&doc)
        .into_iter()
        .map(|o| (o.method, o.path))
        .collect();
    let registered: BTreeSet<(String, String)> = breadbox::api::routes()
        .iter()
        .map(|(m, p, _)| (m.as_str().to_owned(), format!("{API}{p}")))
        .collect();
    let missing: Vec<_> = registered.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&registered).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "assets/openapi.json is out of date with breadbox::api::routes():\n  \
         registered but not documented: {missing:?}\n  \
         documented but not registered: {extra:?}"
    );
    assert!(!documented.is_empty());

    // Every operation is described well enough for a client generator.
    let mut ids = BTreeSet::new();
    for o in api_ops(&doc) {
        let name = format!("{} {}", o.method, o.path);
        let id = o.op["operationId"].as_str().unwrap_or("");
        assert!(!id.is_empty(), "{name}: no operationId");
        assert!(
            ids.insert(id.to_owned()),
            "{name}: duplicate operationId {id}"
        );
        assert!(o.op["summary"].is_string(), "{name}: no summary");
        let statuses = documented_statuses(o.op);
        assert!(
            statuses.iter().any(|s| s.starts_with('2')),
            "{name}: no success response"
        );
        assert!(statuses.contains("401"), "{name}: 401 not documented");
        if o.path.contains("{id}") {
            assert!(statuses.contains("404"), "{name}: 404 not documented");
        }
    }
}

/// A request for a documented operation, `{id}` replaced by `id`.
fn build(app: &TestApp, o: &Op<'_>, id: &str) -> reqwest::RequestBuilder {
    let method = reqwest::Method::from_bytes(o.method.as_bytes()).expect("method");
    app.request(method, &o.path.replace("{id}", id))
}

/// The documented example body of an operation, if it has a body.
fn example_body(o: &Op<'_>) -> Option<Value> {
    let content = &o.op["requestBody"]["content"]["application/json"];
    if content.is_null() {
        return None;
    }
    Some(content["example"].clone())
}

#[actix_web::test]
async fn every_documented_route_answers() {
    let app = spawn_app().await;
    let doc = fetch_doc(&app).await;
    for o in api_ops(&doc) {
        let id = breadbox::domain::ids::new_uuid();
        let name = format!("{} {}", o.method, o.path);
        let statuses = documented_statuses(o.op);

        // Without credentials: 401, which proves the route exists (an
        // unknown route answers 404).
        let r = read(build(&app, &o, &id).send().await.expect("send")).await;
        assert_eq!(
            (r.status, r.code()),
            (401, "MISSING_CREDENTIALS"),
            "{name} without a key: {}",
            r.text
        );

        // With the full key: never a 5xx, always a documented status, and
        // 404 for an unknown id.
        let mut rb = build(&app, &o, &id).header("X-API-Key", &app.key);
        if let Some(body) = example_body(&o) {
            assert!(!body.is_null(), "{name}: the request body has no example");
            rb = rb.json(&body);
        }
        let r = read(rb.send().await.expect("send")).await;
        assert!(r.status < 500, "{name}: {} {}", r.status, r.text);
        assert!(
            statuses.contains(&r.status.to_string()),
            "{name}: answered {} which is not documented ({statuses:?}): {}",
            r.status,
            r.text
        );
        if o.path.contains("{id}") {
            assert_eq!(
                (r.status, r.code()),
                (404, "NOT_FOUND"),
                "{name} with an unknown id: {}",
                r.text
            );
        }
        if r.status >= 400 {
            check_response(&doc, &o.method, &o.path, &r);
        }
    }
}

/// Follow a local `$ref` (`#/components/...`), repeatedly.
fn resolve<'a>(doc: &'a Value, mut schema: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let Some(r) = schema.get("$ref").and_then(Value::as_str) else {
            return schema;
        };
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {r}"));
        schema = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling $ref {r}"));
    }
    panic!("$ref loop");
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        other => panic!("unknown JSON Schema type {other}"),
    }
}

/// Property names a schema (and its `allOf` members) declares.
fn declared(doc: &Value, schema: &Value, out: &mut BTreeSet<String>) {
    let schema = resolve(doc, schema);
    if let Some(props) = schema["properties"].as_object() {
        out.extend(props.keys().cloned());
    }
    for s in schema["allOf"].as_array().into_iter().flatten() {
        declared(doc, s, out);
    }
}

/// A light JSON Schema check: `type`, `enum`, `const`, `required`,
/// `properties`, closed objects, `items`, `allOf`, `anyOf`, `not`,
/// `if`/`then`/`else`, and the `uuid` / `date-time` formats.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    for s in schema["allOf"].as_array().into_iter().flatten() {
        check(doc, s, v, at, errs);
    }
    if let Some(any) = schema["anyOf"].as_array() {
        if !any.iter().any(|s| valid(doc, s, v)) {
            errs.push(format!("{at}: matches none of anyOf"));
        }
    }
    if let Some(n) = schema.get("not") {
        if valid(doc, n, v) {
            errs.push(format!("{at}: matches `not` {n}"));
        }
    }
    if let Some(cond) = schema.get("if") {
        let branch = if valid(doc, cond, v) { "then" } else { "else" };
        if let Some(b) = schema.get(branch) {
            check(doc, b, v, at, errs);
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| type_matches(t, v)) {
        errs.push(format!("{at}: {v} is not of type {types:?}"));
        return;
    }
    if let Some(e) = schema["enum"].as_array() {
        if !e.contains(v) {
            errs.push(format!("{at}: {v} is not one of {e:?}"));
        }
    }
    if let Some(c) = schema.get("const") {
        if c != v {
            errs.push(format!("{at}: {v} is not {c}"));
        }
    }
    if let (Some(format), Some(s)) = (schema["format"].as_str(), v.as_str()) {
        let ok = match format {
            "uuid" => uuid::Uuid::try_parse(s).is_ok(),
            "date-time" => time::OffsetDateTime::parse(s, &Rfc3339).is_ok() && s.ends_with('Z'),
            _ => true,
        };
        if !ok {
            errs.push(format!("{at}: {s:?} is not a valid {format}"));
        }
    }
    if let Some(obj) = v.as_object() {
        for r in schema["required"].as_array().into_iter().flatten() {
            let r = r.as_str().unwrap_or("");
            if !obj.contains_key(r) {
                errs.push(format!("{at}: required property `{r}` is missing"));
            }
        }
        let props = schema["properties"].as_object();
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => check(doc, ps, val, &format!("{at}.{k}"), errs),
                None if schema["additionalProperties"] == json!(false) => {
                    errs.push(format!("{at}: undocumented property `{k}`"));
                }
                None => {}
            }
        }
        if schema["unevaluatedProperties"] == json!(false) {
            let mut known = BTreeSet::new();
            declared(doc, schema, &mut known);
            for k in obj.keys().filter(|k| !known.contains(*k)) {
                errs.push(format!("{at}: undocumented property `{k}`"));
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            check(doc, items, item, &format!("{at}[{i}]"), errs);
        }
    }
}

fn valid(doc: &Value, schema: &Value, v: &Value) -> bool {
    let mut errs = Vec::new();
    check(doc, schema, v, "", &mut errs);
    errs.is_empty()
}

/// Check a real response against the schema documented for its status.
fn check_response(doc: &Value, method: &str, path: &str, r: &Resp) {
    let name = format!("{method} {path} → {}", r.status);
    let op = &doc["paths"][path][method.to_ascii_lowercase()];
    assert!(op.is_object(), "{method} {path} is not documented");
    let resp = resolve(doc, &op["responses"][r.status.to_string()]);
    assert!(
        resp.is_object(),
        "{name}: status not documented: {}",
        r.text
    );
    let media = &resp["content"]["application/json"];
    assert!(media.is_object(), "{name}: no application/json content");
    assert!(
        r.header("content-type").starts_with("application/json"),
        "{name}: content-type {:?}",
        r.header("content-type")
    );
    let mut errs = Vec::new();
    check(doc, &media["schema"], &r.json, "$", &mut errs);
    assert!(
        errs.is_empty(),
        "{name}: the response does not match the documented schema:\n  {}\n{}",
        errs.join("\n  "),
        r.text
    );
}

/// Send a request with the full key and check the answer against the document.
async fn call(app: &TestApp, doc: &Value, method: &str, path: &str, body: Option<Value>) -> Resp {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut rb = app
        .request(m, &format!("{API}{path}"))
        .header("X-API-Key", &app.key);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = read(rb.send().await.expect("send")).await;
    let template = template_of(doc, &format!("{API}{path}"));
    check_response(doc, method, &template, &r);
    r
}

/// The documented path template a concrete path matches.
fn template_of(doc: &Value, concrete: &str) -> String {
    let paths = doc["paths"].as_object().expect("paths");
    let concrete = concrete.split('?').next().unwrap_or(concrete);
    let parts: Vec<&str> = concrete.split('/').collect();
    paths
        .keys()
        .filter(|t| {
            let tp: Vec<&str> = t.split('/').collect();
            tp.len() == parts.len()
                && tp
                    .iter()
                    .zip(&parts)
                    .all(|(a, b)| a == b || (a.starts_with('{') && a.ends_with('}')))
        })
        // Literal segments win over `{id}` (`/connections/link` vs `/connections/{id}`).
        .max_by_key(|t| t.matches('{').count() == 0)
        .cloned()
        .unwrap_or_else(|| panic!("no documented path matches {concrete}"))
}

fn s(v: &Value) -> &str {
    v.as_str().expect("a string")
}

/// Put a connection straight into the database (credential-less).
fn seed_connection(app: &TestApp, user_id: &str) -> String {
    let id = breadbox::domain::ids::new_uuid();
    let short = breadbox::domain::ids::new_short_id();
    let (cid, uid) = (id.clone(), user_id.to_owned());
    app.db
        .write(move |tx| {
            tx.execute(
                "INSERT INTO connections (id, short_id, user_id, provider, institution_id,
                    institution_name, external_id, credential, status, created_at, updated_at)
                 VALUES (?1, ?2, ?3, 'plaid', 'ins_1', 'First Platypus Bank', 'item-1', NULL,
                    'active', ?4, ?4)",
                (&cid, &short, &uid, breadbox::domain::time::now()),
            )?;
            Ok(())
        })
        .expect("seed connection");
    id
}

#[actix_web::test]
async fn responses_match_documented_required_fields() {
    let app = spawn_app_with(with_plaid).await;
    let doc = fetch_doc(&app).await;

    // Users.
    let r = call(
        &app,
        &doc,
        "POST",
        "/users",
        Some(json!({"name": "Ana", "email": "ana@example.com"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let user = r.json;
    let r = call(&app, &doc, "POST", "/users", Some(json!({"name": "Bo"}))).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(call(&app, &doc, "GET", "/users", None).await.status, 200);
    let r = call(
        &app,
        &doc,
        "GET",
        &format!("/users/{}", s(&user["short_id"])),
        None,
    )
    .await;
    assert_eq!(r.status, 200);

    // Link sessions: create, read, list, events, cancel.
    let body = json!({
        "user_id": user["id"],
        "provider": "plaid",
        "single_use": true,
        "redirect_url": "https://example.com/done",
        "label": "Checking",
        "expires_in_seconds": 600,
    });
    let r = call(&app, &doc, "POST", "/connections/link", Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let session = r.json;
    let sid = s(&session["id"]);
    for path in [
        format!("/connections/link/{sid}"),
        format!("/connections/link/{}", s(&session["short_id"])),
        format!("/connections/link/{sid}/events"),
        "/connections/link".to_owned(),
        "/connections/link?status=pending&limit=1".to_owned(),
    ] {
        let r = call(&app, &doc, "GET", &path, None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
    }
    let r = call(
        &app,
        &doc,
        "POST",
        &format!("/connections/link/{sid}/cancel"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "failed");
    let r = call(
        &app,
        &doc,
        "POST",
        &format!("/connections/link/{sid}/cancel"),
        None,
    )
    .await;
    assert_eq!((r.status, r.code()), (409, "INVALID_STATE"));
    let r = call(
        &app,
        &doc,
        "GET",
        &format!("/connections/link/{sid}/events"),
        None,
    )
    .await;
    assert!(r.json["events"].as_array().is_some_and(|e| e.len() >= 2));

    // Connections: list, read, relink, disconnect.
    let cid = seed_connection(&app, s(&user["id"]));
    for path in [
        "/connections".to_owned(),
        format!("/connections?user_id={}&status=active", s(&user["id"])),
        format!("/connections/{cid}"),
    ] {
        let r = call(&app, &doc, "GET", &path, None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
    }
    let r = call(
        &app,
        &doc,
        "POST",
        &format!("/connections/{cid}/relink"),
        Some(json!({"label": "Again"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["connection_id"], json!(cid));
    let r = call(&app, &doc, "DELETE", &format!("/connections/{cid}"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "disconnected");
    let r = call(
        &app,
        &doc,
        "POST",
        &format!("/connections/{cid}/relink"),
        None,
    )
    .await;
    assert_eq!((r.status, r.code()), (409, "CONNECTION_DISCONNECTED"));

    // API keys: create, list, revoke.
    let r = call(
        &app,
        &doc,
        "POST",
        "/api-keys",
        Some(json!({"name": "assistant", "scope": "read_only"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let key_id = s(&r.json["id"]).to_owned();
    assert_eq!(call(&app, &doc, "GET", "/api-keys", None).await.status, 200);
    let r = call(&app, &doc, "DELETE", &format!("/api-keys/{key_id}"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json["revoked_at"].is_string());

    // Errors use the documented envelope.
    let r = call(&app, &doc, "POST", "/users", Some(json!({"nope": 1}))).await;
    assert_eq!(r.status, 400);
    let r = call(&app, &doc, "GET", "/connections/link?limit=0", None).await;
    assert_eq!(r.status, 400);

    // Service routes outside /api/v1 need no key.
    for path in ["/health/live", "/health/ready", "/version"] {
        let r = read(
            app.request(reqwest::Method::GET, path)
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(r.status, 200, "{path}");
        check_response(&doc, "GET", path, &r);
        assert_eq!(doc["paths"][path]["get"]["security"], json!([]), "{path}");
    }
}
