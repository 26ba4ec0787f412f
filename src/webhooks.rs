//! Outbound webhooks: a background task that POSTs outbox messages to the
//! configured URL, signed the Standard Webhooks way, retrying with backoff
//! (across restarts, since the outbox is in the database) until a message is
//! delivered or older than [`MAX_AGE`]. Delivery is at least once: a receiver
//! de-duplicates on `webhook-id`, which stays the same for every attempt.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use log::{debug, warn};
use reqwest::header::CONTENT_TYPE;
use sha2::Sha256;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use url::Url;

use crate::db::outbox::{self, Delivery};
use crate::db::{Db, DbResult};
use crate::domain::time::{self, Timestamp};

/// A message that is still failing this long after it was enqueued is given up.
pub const MAX_AGE: Duration = Duration::from_secs(3 * 24 * 60 * 60);

/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60 * 60);

/// Messages delivered per pass before the outbox is asked again.
const BATCH: u32 = 20;

/// Failure texts stored in the outbox are cut to this many characters.
const MAX_ERROR_CHARS: usize = 200;

/// The `webhook-signature` value: `v1,` + base64 of
/// HMAC-SHA256(secret, `"{msg_id}.{timestamp}.{body}"`).
pub fn sign(secret: &[u8], msg_id: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(format!("{msg_id}.{timestamp}.{body}").as_bytes());
    let tag = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

/// The wait before the next attempt after `attempts` failed ones, with the
/// default 5 s base: see [`backoff_from`].
pub fn backoff(attempts: u32) -> Duration {
    backoff_from(WorkerOptions::default().base_backoff, attempts)
}

/// `base × 2^(attempts−1)`, ±20 % random jitter, never more than [`MAX_BACKOFF`].
pub fn backoff_from(base: Duration, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(20);
    let exp = base.saturating_mul(1 << doublings).min(MAX_BACKOFF);
    // Jitter spreads retries of many messages that failed together; a failing
    // random source just means no jitter.
    let r = getrandom::u32().unwrap_or(u32::MAX / 2);
    let factor = 0.8 + 0.4 * (f64::from(r) / f64::from(u32::MAX));
    exp.mul_f64(factor).min(MAX_BACKOFF)
}

/// Tuning for the delivery task.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// How often the outbox is checked without a wake-up; this is how messages
    /// written by another process (the CLI) get delivered. Default 1 s.
    pub poll_interval: Duration,
    /// Total time allowed for one HTTP attempt. Default 10 s.
    pub timeout: Duration,
    /// The wait after the first failure; it doubles with each further one. Default 5 s.
    pub base_backoff: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            poll_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            base_backoff: Duration::from_secs(5),
        }
    }
}

/// Wakes the delivery task; cheap to clone into request handlers.
#[derive(Debug, Clone)]
pub struct Waker(Arc<Notify>);

impl Waker {
    /// Ask the task to look at the outbox now (after committing a message).
    pub fn wake(&self) {
        // notify_one keeps a permit if the task is busy, so no wake-up is lost.
        self.0.notify_one();
    }
}

/// The running delivery task. Dropping it stops the task.
#[derive(Debug)]
pub struct WorkerHandle {
    waker: Waker,
    // Dropping the sender (with the handle) or sending on it stops the task.
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Ask the task to look at the outbox now (after committing a message).
    pub fn wake(&self) {
        self.waker.wake();
    }

    /// A clonable [`Waker`] for the same task.
    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// Stop the task and wait until it has ended. An attempt in flight is
    /// abandoned; its message stays pending and is sent again later.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            // The task may already be gone; either way it stops.
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                warn!("webhooks: delivery task ended abnormally: {e}");
            }
        }
    }
}

/// Start delivering the outbox of `db` to `url`, signing with `secret` (the
/// decoded key). Must be called inside a Tokio runtime. Fails only if the
/// HTTP client cannot be built.
pub fn spawn(
    db: Db,
    url: Url,
    secret: Vec<u8>,
    opts: WorkerOptions,
) -> Result<WorkerHandle, reqwest::Error> {
    let client = reqwest::Client::builder()
        .timeout(opts.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("breadbox/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let wake = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = oneshot::channel();
    let worker = Worker {
        db,
        client,
        url,
        secret,
        opts,
        wake: Arc::clone(&wake),
    };
    let task = tokio::spawn(worker.run(stop_rx));
    Ok(WorkerHandle {
        waker: Waker(wake),
        stop: Some(stop_tx),
        task: Some(task),
    })
}

/// Everything the delivery task needs.
struct Worker {
    db: Db,
    client: reqwest::Client,
    url: Url,
    secret: Vec<u8>,
    opts: WorkerOptions,
    wake: Arc<Notify>,
}

impl Worker {
    /// Deliver, then wait for a wake-up or the poll interval, until stopped.
    async fn run(self, mut stop: oneshot::Receiver<()>) {
        loop {
            let more = tokio::select! {
                biased;
                _ = &mut stop => break,
                more = self.pass() => more,
            };
            if more {
                continue;
            }
            tokio::select! {
                biased;
                _ = &mut stop => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.opts.poll_interval) => {}
            }
        }
        debug!("webhooks: delivery task stopped");
    }

    /// Try one batch of due messages (finished ones are pruned by
    /// `maintenance`, under `[retention]`). True when the
    /// batch was full, so more may be waiting.
    async fn pass(&self) -> bool {
        let now = time::now();
        let batch = match self
            .db
            .read_async(move |c| outbox::due(c, now, BATCH))
            .await
        {
            Ok(batch) => batch,
            Err(e) => {
                warn!("webhooks: could not read the outbox: {e}");
                return false;
            }
        };
        let full = batch.len() == BATCH as usize;
        for d in batch {
            if let Err(e) = self.deliver(d).await {
                warn!("webhooks: could not record a delivery attempt: {e}");
                return false;
            }
        }
        full
    }

    /// One attempt at one message, and its outcome written back.
    async fn deliver(&self, d: Delivery) -> DbResult<()> {
        let attempt = d.attempts.saturating_add(1);
        let result = self.post(&d, time::now()).await;
        let now = time::now();
        let id = d.id;
        match result {
            Ok(()) => {
                debug!(
                    "webhooks: delivered {id} ({}, attempt {attempt})",
                    d.event_type
                );
                self.db
                    .write_async(move |tx| outbox::mark_delivered(tx, &id, now))
                    .await?;
            }
            Err(error) if too_old(d.created_at, now) => {
                warn!(
                    "webhooks: giving up on {id} ({}) after {attempt} attempts: {error}",
                    d.event_type
                );
                self.db
                    .write_async(move |tx| outbox::mark_dead(tx, &id, now, &error))
                    .await?;
            }
            Err(error) => {
                let wait = backoff_from(self.opts.base_backoff, attempt);
                warn!(
                    "webhooks: attempt {attempt} for {id} ({}) failed: {error}; retrying in {}s",
                    d.event_type,
                    wait.as_secs()
                );
                let next = now.saturating_add(secs(wait));
                self.db
                    .write_async(move |tx| outbox::mark_failed(tx, &id, attempt, next, &error))
                    .await?;
            }
        }
        Ok(())
    }

    /// POST the stored body, signed for `timestamp`. `Err` holds a short
    /// description: never the URL (it may carry a token), body or secret.
    async fn post(&self, d: &Delivery, timestamp: Timestamp) -> Result<(), String> {
        let signature = sign(&self.secret, &d.id, timestamp, &d.payload);
        let response = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", &d.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(d.payload.clone())
            .send()
            .await
            .map_err(describe)?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_redirection() {
            Err(format!(
                "HTTP {} (redirects are not followed)",
                status.as_u16()
            ))
        } else {
            Err(format!("HTTP {}", status.as_u16()))
        }
    }
}

/// Whether a message enqueued at `created_at` is past [`MAX_AGE`] at `now`.
fn too_old(created_at: Timestamp, now: Timestamp) -> bool {
    now.saturating_sub(created_at) >= secs(MAX_AGE)
}

/// Whole seconds of `d` as a timestamp offset.
fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// A short text for a failed request, from its kind and innermost cause.
fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // reqwest's own message names the URL; the causes below it do not.
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    let mut innermost = None;
    while let Some(c) = cause {
        innermost = Some(c);
        cause = c.source();
    }
    let text = match innermost {
        Some(c) => format!("{kind}: {c}"),
        None => kind.to_owned(),
    };
    text.chars().take(MAX_ERROR_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    fn key() -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(SECRET.trim_start_matches("whsec_"))
            .expect("base64")
    }

    #[test]
    fn matches_the_standard_webhooks_test_vector() {
        assert_eq!(
            sign(
                &key(),
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                r#"{"email":"test@example.com","username":"test_user"}"#
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn signature_verifies_with_standardwebhooks() {
        let body = r#"{"type":"link_session.completed","timestamp":"2026-11-07T05:31:56Z","data":{"id":"é"}}"#;
        let ts = time::now();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("webhook-id", "msg_abc".parse().expect("header"));
        headers.insert("webhook-timestamp", ts.to_string().parse().expect("header"));
        headers.insert(
            "webhook-signature",
            sign(&key(), "msg_abc", ts, body).parse().expect("header"),
        );
        let wh = standardwebhooks::Webhook::new(SECRET).expect("secret");
        wh.verify(body.as_bytes(), &headers).expect("verifies");
        assert!(
            wh.verify(b"{}", &headers).is_err(),
            "another body must fail"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempts in 0..200 {
            let d = backoff(attempts);
            assert!(d <= MAX_BACKOFF, "{attempts}: {d:?}");
            assert!(d >= Duration::from_secs(4), "{attempts}: {d:?}");
        }
        // Each wait lies within ±20 % of 5 s × 2^(attempts−1).
        for attempts in 1..9 {
            let expected = Duration::from_secs(5 * (1 << (attempts - 1)));
            let d = backoff(attempts);
            assert!(
                d >= expected.mul_f64(0.8) && d <= expected.mul_f64(1.2),
                "{attempts}: {d:?}"
            );
        }
        assert!(backoff(30) >= MAX_BACKOFF.mul_f64(0.8));
        assert_eq!(backoff_from(Duration::ZERO, 5), Duration::ZERO);
    }

    #[tokio::test]
    async fn failure_text_omits_the_url() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port");
        let err = reqwest::Client::new()
            .post(format!("http://{addr}/hook?token=sekrit"))
            .send()
            .await
            .expect_err("nobody listens");
        let text = describe(err);
        assert!(text.starts_with("connection failed"), "{text}");
        assert!(
            !text.contains("sekrit") && !text.contains("/hook"),
            "{text}"
        );
    }

    #[test]
    fn too_old_after_three_days() {
        let day = 24 * 60 * 60;
        assert!(!too_old(0, 3 * day - 1));
        assert!(too_old(0, 3 * day));
    }
}
