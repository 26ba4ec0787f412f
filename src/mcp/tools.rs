//! The MCP tools: their input types (JSON Schema from `schemars`), output
//! schemas, descriptions and annotations, and the table `tools/list` serves.

use std::sync::Arc;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::schemas;

/// `list_members` takes nothing.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// `create_member`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMemberArgs {
    /// The person's display name (1–200 characters), shown on the link page.
    pub name: String,
    /// Their email address (optional).
    #[serde(default)]
    pub email: Option<String>,
}

/// `create_bank_link`: the body of `POST /api/v1/connections/link`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBankLinkArgs {
    /// The household member the link is for: UUID or short_id (see list_members).
    pub user_id: String,
    /// "plaid" or "teller" to pin one provider; omit or "" to let the person choose.
    #[serde(default)]
    pub provider: Option<String>,
    /// End the link after the first bank is connected (default false).
    #[serde(default)]
    pub single_use: Option<bool>,
    /// Absolute http(s) URL the page sends the person to afterwards.
    #[serde(default)]
    pub redirect_url: Option<String>,
    /// A note for the audit timeline and the page (at most 200 characters).
    #[serde(default)]
    pub label: Option<String>,
    /// Seconds until the link expires: 1–3600; 0 or omitted = 900.
    #[serde(default)]
    pub expires_in_seconds: Option<i64>,
}

/// `link_bank_account`: a create body plus how long to wait.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkBankAccountArgs {
    /// The household member the link is for: UUID or short_id (see list_members).
    pub user_id: String,
    /// "plaid" or "teller" to pin one provider; omit or "" to let the person choose.
    #[serde(default)]
    pub provider: Option<String>,
    /// End the link after the first bank is connected (default false).
    #[serde(default)]
    pub single_use: Option<bool>,
    /// A note for the audit timeline and the page (at most 200 characters).
    #[serde(default)]
    pub label: Option<String>,
    /// Seconds until the link expires: 1–3600; 0 or omitted = 900.
    #[serde(default)]
    pub expires_in_seconds: Option<i64>,
    /// How long to wait for the person to finish, in seconds (1–3600); omitted
    /// = until the link expires.
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

/// A tool that names one entity.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdArgs {
    /// UUID or short_id.
    pub id: String,
}

/// `wait_for_bank_link`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitArgs {
    /// The link session: UUID or short_id.
    pub id: String,
    /// Longest wait in seconds, 1–60 (default 30).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

/// `list_bank_links`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListBankLinksArgs {
    /// Only this member's links (UUID or short_id).
    #[serde(default)]
    pub user_id: Option<String>,
    /// Only this status: pending, active, completed, consumed, failed, expired.
    #[serde(default)]
    pub status: Option<String>,
    /// Page size 1–200 (default 50).
    #[serde(default)]
    pub limit: Option<u32>,
    /// next_cursor from the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// `list_connections`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListConnectionsArgs {
    /// Only this member's connections (UUID or short_id).
    #[serde(default)]
    pub user_id: Option<String>,
    /// Only this status: active, pending_reauth, error, disconnected.
    #[serde(default)]
    pub status: Option<String>,
}

/// `relink_connection`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RelinkArgs {
    /// The connection: UUID or short_id.
    pub id: String,
    /// Absolute http(s) URL the page sends the person to afterwards.
    #[serde(default)]
    pub redirect_url: Option<String>,
    /// A note for the audit timeline and the page (at most 200 characters).
    #[serde(default)]
    pub label: Option<String>,
    /// Seconds until the link expires: 1–3600; 0 or omitted = 900.
    #[serde(default)]
    pub expires_in_seconds: Option<i64>,
}

/// What a tool does to the world, for annotations and scope filtering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Reads only: allowed for `read_only` keys.
    Read,
    /// Creates something new each call.
    Create,
    /// Ends or removes something; repeating it changes nothing more.
    Destroy,
}

/// One tool: name, effect, description, schemas.
pub struct Spec {
    /// Tool name.
    pub name: &'static str,
    /// Short title.
    pub title: &'static str,
    /// Effect.
    pub effect: Effect,
    /// One paragraph an LLM can act on.
    pub description: &'static str,
    input: fn() -> Value,
    output: fn() -> Value,
}

fn input<T: JsonSchema>() -> Value {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>();
    let mut v = serde_json::to_value(schema).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("$schema");
        o.remove("title");
        o.entry("properties")
            .or_insert_with(|| Value::Object(Default::default()));
    }
    v
}

fn session_page() -> Value {
    schemas::list_of("sessions", schemas::session(), true)
}
fn member_list() -> Value {
    schemas::list_of("users", schemas::user(), false)
}
fn connection_list() -> Value {
    schemas::list_of("connections", schemas::connection(), false)
}

/// Every tool, in the order `tools/list` shows them.
pub const SPECS: &[Spec] = &[
    Spec {
        name: "list_members",
        title: "List household members",
        effect: Effect::Read,
        description: "List the household members (people) this Breadbox server can send bank links to. Returns {\"users\":[{id, short_id, name, email, created_at}]}. Call this first to find the user_id for create_bank_link or link_bank_account; if the person is missing, add them with create_member.",
        input: input::<NoArgs>,
        output: member_list,
    },
    Spec {
        name: "create_member",
        title: "Add a household member",
        effect: Effect::Create,
        description: "Add a household member (a person who can be sent a bank link). Give their display name (shown on the link page as who the link is for) and optionally an email. Returns the new member {id, short_id, name, email, created_at}; use its id as user_id for create_bank_link. Check list_members first so you do not add the same person twice.",
        input: input::<CreateMemberArgs>,
        output: schemas::user,
    },
    Spec {
        name: "create_bank_link",
        title: "Create a bank-link URL",
        effect: Effect::Create,
        description: "Create a short-lived hosted link (a URL) that a household member opens to connect their bank through Plaid or Teller. Returns the link session with url, token and message; send the message (or the url) to that person as is, then call wait_for_bank_link with the session id to learn when they are done. The link expires after expires_in_seconds (default 15 minutes). Prefer link_bank_account when you can wait for the person in one call.",
        input: input::<CreateBankLinkArgs>,
        output: schemas::created_session,
    },
    Spec {
        name: "get_bank_link",
        title: "Read a bank link",
        effect: Effect::Read,
        description: "Read one bank-link session by id or short_id: its status (pending = not opened yet, active = being used, completed/consumed = done, failed = canceled, expired = too late), and result_connection_ids, the bank connections the person added. Use get_connection on those ids for the bank names and accounts.",
        input: input::<IdArgs>,
        output: schemas::session,
    },
    Spec {
        name: "wait_for_bank_link",
        title: "Wait for a bank link to change",
        effect: Effect::Read,
        description: "Wait until a bank-link session changes (the person opens it, adds a bank, finishes, cancels, or it expires) or timeout_seconds (at most 60, default 30) pass, then return the session. Returns at once when the session has already ended. Call it again while the status is pending or active; stop when it is completed, consumed, failed or expired.",
        input: input::<WaitArgs>,
        output: schemas::session,
    },
    Spec {
        name: "list_bank_links",
        title: "List bank links",
        effect: Effect::Read,
        description: "List bank-link sessions, newest first, optionally only one member's (user_id) or one status. Returns {\"sessions\":[…],\"next_cursor\":…}; pass next_cursor as cursor for the next page (null = no more). Use it to find a link you created earlier or to check whether a member already has a live one before creating another.",
        input: input::<ListBankLinksArgs>,
        output: session_page,
    },
    Spec {
        name: "cancel_bank_link",
        title: "Cancel a bank link",
        effect: Effect::Destroy,
        description: "Cancel a bank-link session that has not ended, so its URL stops working (status becomes failed with error_code CANCELED). Use it when a link was sent to the wrong person or is no longer needed. Fails with INVALID_STATE when the session has already ended.",
        input: input::<IdArgs>,
        output: schemas::session,
    },
    Spec {
        name: "list_connections",
        title: "List bank connections",
        effect: Effect::Read,
        description: "List the bank connections (one per bank login a member linked), optionally only one member's (user_id) or one status (active, pending_reauth = the person must sign in again, error, disconnected). Returns {\"connections\":[…]} with institution names; never any credential.",
        input: input::<ListConnectionsArgs>,
        output: connection_list,
    },
    Spec {
        name: "get_connection",
        title: "Read a bank connection",
        effect: Effect::Read,
        description: "Read one bank connection by id or short_id: the bank (institution_name), its health status, error_code when something is wrong, and accounts when known. A status of pending_reauth means the person must sign in again: call relink_connection.",
        input: input::<IdArgs>,
        output: schemas::connection,
    },
    Spec {
        name: "relink_connection",
        title: "Create a reconnect link",
        effect: Effect::Create,
        description: "Create a link that lets the owner of an existing bank connection sign in to their bank again (for pending_reauth or error connections). Returns the session with url and message to send the person, like create_bank_link; then call wait_for_bank_link. Fails with CONNECTION_DISCONNECTED for a disconnected connection: create a new link with create_bank_link instead.",
        input: input::<RelinkArgs>,
        output: schemas::created_session,
    },
    Spec {
        name: "disconnect_connection",
        title: "Disconnect a bank connection",
        effect: Effect::Destroy,
        description: "Disconnect a bank connection for good: its stored credential is wiped and the provider is told to forget it; status becomes disconnected. Only do this when the person asks for it; it cannot be undone (they would have to link the bank again).",
        input: input::<IdArgs>,
        output: schemas::connection,
    },
    Spec {
        name: "link_bank_account",
        title: "Link a member's bank account (all in one)",
        effect: Effect::Create,
        description: "Do the whole bank-linking flow in one call: create a link for the member, show it to the person (through URL elicitation when your client supports it), wait until they finish or timeout_seconds pass, and return the outcome with the connection ids and connections that were linked. If your client cannot open URLs for the user, this returns outcome pending with url and message at once: send the message to the person and call wait_for_bank_link with session.id.",
        input: input::<LinkBankAccountArgs>,
        output: schemas::link_outcome,
    },
];

/// The spec named `name`.
pub fn find(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

fn object(v: Value) -> Arc<JsonObject> {
    Arc::new(match v {
        Value::Object(o) => o,
        _ => JsonObject::new(),
    })
}

impl Spec {
    /// The `tools/list` entry.
    pub fn tool(&self) -> Tool {
        let read = self.effect == Effect::Read;
        let annotations = ToolAnnotations::with_title(self.title)
            .read_only(read)
            .destructive(self.effect == Effect::Destroy)
            .idempotent(self.effect != Effect::Create)
            .open_world(false);
        Tool::new(self.name, self.description, object((self.input)()))
            .with_title(self.title)
            .with_raw_output_schema(object((self.output)()))
            .with_annotations(annotations)
    }
}
