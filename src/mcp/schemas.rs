//! Output schemas (JSON Schema 2020-12) of the MCP tools: the same objects
//! the REST API answers (CONTRACT §4), written out by hand so they say
//! exactly what the wire carries (RFC 3339 strings, `""` defaults, nulls).

use serde_json::{json, Map, Value};

fn nullable(kind: &str) -> Value {
    json!({ "type": [kind, "null"] })
}

/// A link session (§3 fields).
pub fn session() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": { "type": "string", "description": "UUID" },
            "short_id": { "type": "string", "description": "8 base62 characters" },
            "user_id": { "type": "string", "description": "the member's UUID" },
            "provider": { "enum": ["", "plaid", "teller"] },
            "action": { "enum": ["link", "relink"] },
            "connection_id": { "type": "string", "description": "relink only" },
            "single_use": { "type": "boolean" },
            "redirect_url": { "type": "string" },
            "label": { "type": "string" },
            "status": { "enum": ["pending", "active", "completed", "consumed", "failed", "expired"] },
            "error_code": { "type": "string", "description": "failed only" },
            "error_message": { "type": "string", "description": "failed only" },
            "result_connection_ids": { "type": "array", "items": { "type": "string" } },
            "expires_at": { "type": "string", "format": "date-time" },
            "started_at": nullable("string"),
            "completed_at": nullable("string"),
            "created_at": { "type": "string", "format": "date-time" }
        },
        "required": ["id", "short_id", "user_id", "provider", "action", "single_use",
            "redirect_url", "label", "status", "result_connection_ids", "expires_at",
            "started_at", "completed_at", "created_at"]
    })
}

/// A session as created: the session plus `token`, `url` and `message`.
pub fn created_session() -> Value {
    let mut s = session();
    let props = s["properties"]
        .as_object_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let mut props: Map<String, Value> = props;
    props.insert(
        "token".into(),
        json!({ "type": "string", "description": "the link token, shown once" }),
    );
    props.insert(
        "url".into(),
        json!({ "type": "string", "description": "the page to send the person" }),
    );
    props.insert(
        "message".into(),
        json!({ "type": "string", "description": "plain text to relay to the person as is" }),
    );
    s["properties"] = Value::Object(props);
    if let Some(req) = s["required"].as_array_mut() {
        req.extend(["token", "url", "message"].map(Value::from));
    }
    s
}

/// A household member.
pub fn user() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": { "type": "string" },
            "short_id": { "type": "string" },
            "name": { "type": "string" },
            "email": nullable("string"),
            "created_at": { "type": "string", "format": "date-time" }
        },
        "required": ["id", "short_id", "name", "email", "created_at"]
    })
}

/// A bank connection (never a credential).
pub fn connection() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": { "type": "string" },
            "short_id": { "type": "string" },
            "user_id": { "type": "string", "description": "the member's UUID" },
            "provider": { "enum": ["plaid", "teller"] },
            "institution_id": { "type": "string" },
            "institution_name": { "type": "string" },
            "status": { "enum": ["active", "pending_reauth", "error", "disconnected"] },
            "error_code": nullable("string"),
            "error_message": nullable("string"),
            "accounts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": { "type": "string" },
                        "name": { "type": "string" },
                        "mask": nullable("string"),
                        "type": nullable("string"),
                        "subtype": nullable("string")
                    }
                }
            },
            "created_at": { "type": "string", "format": "date-time" },
            "updated_at": { "type": "string", "format": "date-time" }
        },
        "required": ["id", "short_id", "user_id", "provider", "institution_name", "status",
            "created_at", "updated_at"]
    })
}

/// `{"<key>": [item…]}` plus `next_cursor` when `paged`.
pub fn list_of(key: &str, item: Value, paged: bool) -> Value {
    let mut props = Map::new();
    props.insert(key.into(), json!({ "type": "array", "items": item }));
    let mut required = vec![Value::from(key)];
    if paged {
        props.insert(
            "next_cursor".into(),
            json!({ "type": ["string", "null"], "description": "pass as cursor for the next page" }),
        );
        required.push("next_cursor".into());
    }
    json!({ "type": "object", "properties": props, "required": required })
}

/// What `link_bank_account` returns.
pub fn link_outcome() -> Value {
    json!({
        "type": "object",
        "properties": {
            "outcome": {
                "enum": ["completed", "consumed", "failed", "expired", "declined", "timed_out", "pending"],
                "description": "how it ended; pending = no URL elicitation, call wait_for_bank_link"
            },
            "session": session(),
            "url": { "type": "string" },
            "message": { "type": "string" },
            "connection_ids": { "type": "array", "items": { "type": "string" } },
            "connections": { "type": "array", "items": connection() }
        },
        "required": ["outcome", "session", "url", "message", "connection_ids", "connections"]
    })
}

/// The error structure a failed tool returns (the REST envelope).
pub fn error_envelope(code: &str, message: &str) -> Value {
    json!({ "error": { "code": code, "message": message } })
}
