//! `link_bank_account`: mint, show the person the link through URL-mode
//! elicitation, wait for the session to end, report what was linked.

use std::time::Duration;

use rmcp::model::ElicitationAction;
use rmcp::service::RequestContext;
use rmcp::RoleServer;
use serde_json::{json, Value};

use super::{elicitation_complete, supports_url_elicitation, tools, Breadbox, Caller, Done};
use crate::app;
use crate::domain::link_session::{CreateRequest, LinkSession};
use crate::domain::time;
use crate::error::ApiError;

/// Longest `timeout_seconds`, in seconds (the longest a link lives).
const MAX_TIMEOUT: u64 = 3600;

impl Breadbox {
    pub(super) async fn link_bank_account(
        &self,
        a: tools::LinkBankAccountArgs,
        caller: &Caller,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Done, ApiError> {
        if let Some(t) = a.timeout_seconds {
            if !(1..=MAX_TIMEOUT).contains(&t) {
                return Err(ApiError::Validation(format!(
                    "timeout_seconds: must be 1 to {MAX_TIMEOUT} seconds, got {t}"
                )));
            }
        }
        let req = CreateRequest {
            user_id: a.user_id,
            provider: a.provider,
            single_use: a.single_use,
            redirect_url: None,
            label: a.label,
            expires_in_seconds: a.expires_in_seconds,
        };
        let state = &*self.state;
        let reply =
            app::link_sessions::create(state, &caller.key, &req, Ok(None), &caller.public_base)
                .await?;
        let created = super::body_value(&reply.body)?;
        let url = created["url"].as_str().unwrap_or_default().to_owned();
        let id = created["id"].as_str().unwrap_or_default().to_owned();
        let session = app::link_sessions::get(state, &id).await?;
        let message = self.message(&session, &url).await?;

        if !supports_url_elicitation(ctx) {
            let text = format!(
                "Send this message to the person, then call wait_for_bank_link with id {id} \
                 until the status is completed, consumed, failed or expired:\n\n{message}"
            );
            return self
                .outcome("pending", session, &url, message, Some(text))
                .await;
        }

        let until_expiry = u64::try_from(session.expires_at - time::now()).unwrap_or(0);
        let timeout = a.timeout_seconds.unwrap_or(until_expiry).min(MAX_TIMEOUT);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let link = url::Url::parse(&url).map_err(|e| ApiError::Internal(e.to_string()))?;
        // The session's UUID names the elicitation: unique and already known
        // to the assistant from the result.
        let asked = ctx
            .peer
            .elicit_url_with_timeout(
                message.clone(),
                link,
                id.clone(),
                Some(Duration::from_secs(timeout.max(1))),
            )
            .await;
        match asked {
            Ok(ElicitationAction::Accept) => {}
            Ok(_) => {
                // The person said no: the link must not stay usable.
                let ended = app::link_sessions::cancel(state, &caller.key, &id, None)
                    .await
                    .ok()
                    .and_then(|r| serde_json::from_str::<Value>(&r.body).ok());
                let session = match ended {
                    Some(_) => app::link_sessions::get(state, &id).await?,
                    None => session,
                };
                return self.outcome("declined", session, &url, message, None).await;
            }
            Err(e) => {
                log::warn!("URL elicitation failed, answering with the link instead: {e}");
                return self.outcome("pending", session, &url, message, None).await;
            }
        }

        let mut current = session;
        while !current.status.is_terminal() {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            let slice = (deadline - now).min(Duration::from_secs(app::link_sessions::MAX_WAIT));
            let previous = current.clone();
            tokio::select! {
                next = app::link_sessions::wait(state, previous, slice) => current = next?,
                // The client gave up on the call: stop waiting, nothing more to send.
                () = ctx.ct.cancelled() => return Err(ApiError::RequestTimeout),
            }
            if state.waiters.is_closing() {
                break;
            }
        }
        elicitation_complete(ctx, &id).await;
        let outcome = if current.status.is_terminal() {
            current.status.as_str()
        } else {
            "timed_out"
        };
        self.outcome(outcome, current, &url, message, None).await
    }

    async fn outcome(
        &self,
        outcome: &str,
        session: LinkSession,
        url: &str,
        message: String,
        text: Option<String>,
    ) -> Result<Done, ApiError> {
        let mut connections = Vec::new();
        for cid in &session.result_connection_ids {
            if let Ok(c) = app::connections::get(&self.state, cid).await {
                connections.push(c);
            }
        }
        let text = text.unwrap_or_else(|| match outcome {
            "completed" | "consumed" => format!(
                "The person finished: {} bank connection(s) linked.",
                connections.len()
            ),
            "timed_out" => format!(
                "The person has not finished yet; call wait_for_bank_link with id {}.",
                session.id
            ),
            "declined" => "The person declined to open the link; it was canceled.".to_owned(),
            other => format!("The link ended: {other}."),
        });
        Ok(Done {
            value: json!({
                "outcome": outcome,
                "connection_ids": session.result_connection_ids,
                "connections": connections,
                "url": url,
                "message": message,
                "session": session,
            }),
            text: Some(text),
        })
    }
}
