//! MCP, the AI assistant's front-end (CONTRACT §9): the same tools over
//! streamable HTTP at `/mcp` ([`http`]) and over stdio (`breadbox mcp`,
//! [`stdio`]). Each tool is a thin adapter over [`crate::app`]; a failure is
//! a tool result with `isError: true` and the REST envelope's code and
//! message; a malformed call (unknown tool) is a JSON-RPC error.
//!
//! Protocol version: the server speaks MCP up to `2025-11-25`, the newest
//! revision with the `initialize` handshake and server-to-client requests.
//! `link_bank_account` needs `elicitation/create` (a server-to-client
//! request), which `2026-07-28` forbids; a client that probes
//! `server/discover` first (the Python SDK's default `auto` mode) sees no
//! modern version advertised and falls back to `initialize`.

pub mod http;
mod link;
pub mod schemas;
pub mod stdio;
pub mod tools;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, CustomNotification,
    Implementation, InitializeResult, ListToolsResult, PaginatedRequestParams, ProtocolVersion,
    ServerCapabilities, ServerConfig, ServerNotification,
};
use rmcp::service::{ElicitationMode, RequestContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::app::{self, AppState};
use crate::domain::api_key::{ApiKey, PlainKey, Scope};
use crate::domain::link_session::{CreateRequest, LinkSession, RelinkRequest};
use crate::domain::time;
use crate::error::ApiError;
use tools::{Effect, Spec};

/// The newest protocol revision this server negotiates (see the module docs).
pub const PROTOCOL: ProtocolVersion = ProtocolVersion::V_2025_11_25;

/// Who is calling and where links point: put in each HTTP request's
/// extensions by the `/mcp` auth middleware, fixed for a stdio server.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The API key the call acts as.
    pub key: ApiKey,
    /// `scheme://host[:port]` links are built on.
    pub public_base: String,
}

#[derive(Clone)]
enum Identity {
    /// Streamable HTTP: each request carries its [`Caller`].
    PerRequest,
    /// stdio: one key (looked up again on every call, so revoking it stops
    /// the server's tools at once).
    Fixed {
        key_hash: String,
        public_base: String,
    },
}

/// The MCP server: tool list and dispatch over [`AppState`].
#[derive(Clone)]
pub struct Breadbox {
    state: Arc<AppState>,
    identity: Identity,
}

/// What a tool produced: the structured object and an optional plain-text
/// line shown before it.
struct Done {
    value: Value,
    text: Option<String>,
}

impl Done {
    fn json(value: Value) -> Self {
        Done { value, text: None }
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::Internal(e.to_string()))
}

fn parse<T: DeserializeOwned>(args: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(args).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." {
            ApiError::Validation(inner)
        } else {
            ApiError::Validation(format!("{path}: {inner}"))
        }
    })
}

/// The tool result for a failure: `isError`, the REST envelope as
/// structured content and `CODE: message` as text.
pub fn tool_error(e: &ApiError) -> CallToolResult {
    if let ApiError::Internal(detail) = e {
        log::error!("internal error in an MCP tool: {detail}");
    }
    let mut r = CallToolResult::error(vec![ContentBlock::text(format!(
        "{}: {}",
        e.code(),
        e.message()
    ))]);
    r.structured_content = Some(schemas::error_envelope(e.code(), &e.message()));
    r
}

impl Breadbox {
    /// A server for streamable HTTP: the caller comes with each request.
    pub fn http(state: Arc<AppState>) -> Self {
        Breadbox {
            state,
            identity: Identity::PerRequest,
        }
    }

    /// A server acting as the key whose hash is `key_hash` (stdio).
    pub fn fixed(state: Arc<AppState>, key_hash: String, public_base: String) -> Self {
        Breadbox {
            state,
            identity: Identity::Fixed {
                key_hash,
                public_base,
            },
        }
    }

    async fn caller(&self, ctx: &RequestContext<RoleServer>) -> Result<Caller, ApiError> {
        match &self.identity {
            Identity::PerRequest => {
                rmcp_actix_web::transport::on_request_extensions(&ctx.extensions)
                    .and_then(|e| e.get::<Caller>())
                    .cloned()
                    .ok_or(ApiError::MissingCredentials)
            }
            Identity::Fixed {
                key_hash,
                public_base,
            } => {
                let key = app::api_keys::find_by_hash(&self.state, key_hash.clone())
                    .await?
                    .ok_or(ApiError::InvalidApiKey)?;
                if key.revoked_at.is_some() {
                    return Err(ApiError::RevokedApiKey);
                }
                app::api_keys::record_use(&self.state, &key);
                Ok(Caller {
                    key,
                    public_base: public_base.clone(),
                })
            }
        }
    }

    async fn run(
        &self,
        spec: &Spec,
        args: Value,
        caller: &Caller,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Done, ApiError> {
        let state = &*self.state;
        let key = &caller.key;
        let base = caller.public_base.as_str();
        match spec.name {
            "list_members" => {
                parse::<tools::NoArgs>(args)?;
                let users = app::users::list(state).await?;
                Ok(Done::json(json!({ "users": users })))
            }
            "create_member" => {
                let a: tools::CreateMemberArgs = parse(args)?;
                let body = crate::domain::user::CreateUser {
                    name: a.name,
                    email: a.email,
                };
                Ok(Done::json(to_value(
                    &app::users::create(state, key, body).await?,
                )?))
            }
            "create_bank_link" => {
                let a: tools::CreateBankLinkArgs = parse(args)?;
                let req = CreateRequest {
                    user_id: a.user_id,
                    provider: a.provider,
                    single_use: a.single_use,
                    redirect_url: a.redirect_url,
                    label: a.label,
                    expires_in_seconds: a.expires_in_seconds,
                };
                let reply = app::link_sessions::create(state, key, &req, Ok(None), base).await?;
                self.with_message(&reply.body).await
            }
            "get_bank_link" => {
                let a: tools::IdArgs = parse(args)?;
                Ok(Done::json(to_value(
                    &app::link_sessions::get(state, &a.id).await?,
                )?))
            }
            "wait_for_bank_link" => {
                let a: tools::WaitArgs = parse(args)?;
                let secs = a.timeout_seconds.unwrap_or(30);
                if !(1..=app::link_sessions::MAX_WAIT).contains(&secs) {
                    return Err(ApiError::Validation(format!(
                        "timeout_seconds: must be 1 to 60 seconds, got {secs}"
                    )));
                }
                let first = app::link_sessions::get(state, &a.id).await?;
                let s = app::link_sessions::wait(state, first, Duration::from_secs(secs)).await?;
                Ok(Done::json(to_value(&s)?))
            }
            "list_bank_links" => {
                let a: tools::ListBankLinksArgs = parse(args)?;
                let page = app::link_sessions::list(
                    state,
                    app::link_sessions::ListParams {
                        user_id: a.user_id,
                        status: a.status,
                        limit: a.limit.map(|l| l.to_string()),
                        cursor: a.cursor,
                    },
                )
                .await?;
                Ok(Done::json(page))
            }
            "cancel_bank_link" => {
                let a: tools::IdArgs = parse(args)?;
                let reply = app::link_sessions::cancel(state, key, &a.id, None).await?;
                Ok(Done::json(body_value(&reply.body)?))
            }
            "list_connections" => {
                let a: tools::ListConnectionsArgs = parse(args)?;
                let list = app::connections::list(state, a.user_id, a.status).await?;
                Ok(Done::json(json!({ "connections": list })))
            }
            "get_connection" => {
                let a: tools::IdArgs = parse(args)?;
                Ok(Done::json(to_value(
                    &app::connections::get(state, &a.id).await?,
                )?))
            }
            "relink_connection" => {
                let a: tools::RelinkArgs = parse(args)?;
                let body = RelinkRequest {
                    redirect_url: a.redirect_url,
                    label: a.label,
                    expires_in_seconds: a.expires_in_seconds,
                };
                let reply =
                    app::connections::relink(state, key, &a.id, &body, Ok(None), base).await?;
                self.with_message(&reply.body).await
            }
            "disconnect_connection" => {
                let a: tools::IdArgs = parse(args)?;
                let (conn, credential) = app::connections::disconnect(state, key, &a.id).await?;
                if let Some(credential) = credential {
                    let data = actix_web::web::Data::from(self.state.clone());
                    crate::app::bank::forget_at_provider(
                        data.clone().into_inner(),
                        &conn,
                        credential,
                    );
                }
                Ok(Done::json(to_value(&conn)?))
            }
            "link_bank_account" => {
                let a: tools::LinkBankAccountArgs = parse(args)?;
                self.link_bank_account(a, caller, ctx).await
            }
            other => Err(ApiError::NotFound(format!("tool {other}"))),
        }
    }

    /// A create reply plus the `message` to relay (whom, what, until when).
    async fn with_message(&self, body: &str) -> Result<Done, ApiError> {
        let mut value = body_value(body)?;
        let id = value["id"].as_str().unwrap_or_default().to_owned();
        let url = value["url"].as_str().unwrap_or_default().to_owned();
        let session = app::link_sessions::get(&self.state, &id).await?;
        let message = self.message(&session, &url).await?;
        if let Some(o) = value.as_object_mut() {
            o.insert("message".into(), Value::String(message.clone()));
        }
        Ok(Done {
            value,
            text: Some(message),
        })
    }

    async fn message(&self, session: &LinkSession, url: &str) -> Result<String, ApiError> {
        let user = app::users::get(&self.state, &session.user_id).await?;
        Ok(app::link_sessions::relay_message(
            &user.name,
            url,
            session.connection_id.is_some(),
            session.expires_at,
            time::now(),
        ))
    }
}

fn body_value(body: &str) -> Result<Value, ApiError> {
    serde_json::from_str(body).map_err(|e| ApiError::Internal(e.to_string()))
}

impl ServerHandler for Breadbox {
    fn get_info(&self) -> ServerConfig {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("breadbox", env!("CARGO_PKG_VERSION")))
            .with_protocol_version(PROTOCOL)
            .with_instructions(
                "Breadbox hands out short-lived links that let a household member connect \
                 their bank (Plaid or Teller). Find the member with list_members (or add \
                 them with create_member), then call link_bank_account, or create_bank_link \
                 and send the returned message to the person, then wait_for_bank_link.",
            )
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::known_up_to(&PROTOCOL))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let full = self
            .caller(&ctx)
            .await
            .is_ok_and(|c| c.key.scope.allows(Scope::FullAccess));
        let tools = tools::SPECS
            .iter()
            .filter(|s| full || s.effect == Effect::Read)
            .map(Spec::tool)
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let Some(spec) = tools::find(&request.name) else {
            return Err(McpError::invalid_params(
                format!("unknown tool: {}", request.name),
                None,
            ));
        };
        let caller = match self.caller(&ctx).await {
            Ok(c) => c,
            Err(e) => return Ok(tool_error(&e).into()),
        };
        if spec.effect != Effect::Read && !caller.key.scope.allows(Scope::FullAccess) {
            return Ok(tool_error(&ApiError::InsufficientScope).into());
        }
        let args = Value::Object(request.arguments.unwrap_or_default());
        let result = match self.run(spec, args, &caller, &ctx).await {
            Ok(done) => {
                let mut content = Vec::new();
                if let Some(text) = done.text {
                    content.push(ContentBlock::text(text));
                }
                content.push(ContentBlock::text(done.value.to_string()));
                let mut r = CallToolResult::success(content);
                r.structured_content = Some(done.value);
                r
            }
            Err(e) => tool_error(&e),
        };
        Ok(result.into())
    }
}

/// Send `notifications/elicitation/complete` for `elicitation_id` (rmcp has
/// no typed notification for it yet: a custom one carries the same wire form).
async fn elicitation_complete(ctx: &RequestContext<RoleServer>, elicitation_id: &str) {
    let n = CustomNotification::new(
        "notifications/elicitation/complete",
        Some(json!({ "elicitationId": elicitation_id })),
    );
    if let Err(e) = ctx
        .peer
        .send_notification(ServerNotification::CustomNotification(n))
        .await
    {
        log::warn!("could not send elicitation/complete: {e}");
    }
}

/// Whether the client declared URL-mode elicitation.
fn supports_url_elicitation(ctx: &RequestContext<RoleServer>) -> bool {
    ctx.peer
        .supported_elicitation_modes()
        .contains(&ElicitationMode::Url)
}

/// The SHA-256 of a presented key, or why it cannot be one.
pub fn key_hash(raw: &str) -> Result<String, ApiError> {
    let plain = PlainKey::from_presented(raw.trim());
    if raw.trim().is_empty() {
        return Err(ApiError::MissingCredentials);
    }
    if !plain.well_formed() {
        return Err(ApiError::InvalidApiKey);
    }
    Ok(plain.hash())
}
