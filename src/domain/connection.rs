//! Bank connections as the API shows them (never any credential).

use serde::{Deserialize, Serialize};

use super::time::{self, Timestamp};

/// A connection's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    /// Working.
    Active,
    /// The bank wants the person to sign in again.
    PendingReauth,
    /// The provider reported an error.
    Error,
    /// Removed; the credential is wiped.
    Disconnected,
}

impl ConnectionStatus {
    /// Every status, for validating filters.
    pub const ALL: [ConnectionStatus; 4] = [
        ConnectionStatus::Active,
        ConnectionStatus::PendingReauth,
        ConnectionStatus::Error,
        ConnectionStatus::Disconnected,
    ];

    /// The stored and wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionStatus::Active => "active",
            ConnectionStatus::PendingReauth => "pending_reauth",
            ConnectionStatus::Error => "error",
            ConnectionStatus::Disconnected => "disconnected",
        }
    }

    /// Parse the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// A bank connection.
#[derive(Debug, Clone, Serialize)]
pub struct Connection {
    /// UUID.
    pub id: String,
    /// Base62 short id.
    pub short_id: String,
    /// The owner's UUID.
    pub user_id: String,
    /// `plaid` or `teller`.
    pub provider: String,
    /// The provider's institution id (may be `""`).
    pub institution_id: String,
    /// The bank's name.
    pub institution_name: String,
    /// Health.
    pub status: ConnectionStatus,
    /// Last provider error code.
    pub error_code: Option<String>,
    /// Last provider error message.
    pub error_message: Option<String>,
    /// Created.
    #[serde(serialize_with = "time::ser")]
    pub created_at: Timestamp,
    /// Last changed.
    #[serde(serialize_with = "time::ser")]
    pub updated_at: Timestamp,
    /// The accounts the provider reported at the last exchange or relink.
    pub accounts: Vec<Account>,
    /// When the provider will cut access unless the person re-consents
    /// (Plaid `PENDING_EXPIRATION` / `PENDING_DISCONNECT`); `null` when not announced.
    #[serde(serialize_with = "time::ser_opt")]
    pub access_expires_at: Option<Timestamp>,
    /// The provider found accounts the person has not shared yet (a relink
    /// with account selection adds them).
    pub new_accounts_available: bool,
    /// When the last pulled health check finished (`null`: never checked).
    #[serde(serialize_with = "time::ser_opt")]
    pub last_checked_at: Option<Timestamp>,
}

/// One bank account of a connection, as the provider reported it (no
/// balances, no number beyond the mask).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The provider's account id (Plaid `account_id`, Teller `acc_…`).
    pub id: String,
    /// The account's name as the bank shows it.
    pub name: String,
    /// Last 2–4 characters of the account number (Plaid `mask`, Teller `last_four`).
    pub mask: Option<String>,
    /// e.g. `depository`, `credit`, `loan`, `investment`.
    #[serde(rename = "type")]
    pub kind: String,
    /// e.g. `checking`, `savings`, `credit_card`.
    pub subtype: Option<String>,
}

/// Whether two account lists share an account mask (the §10 duplicate rule).
pub fn masks_overlap(a: &[Account], b: &[Account]) -> bool {
    a.iter()
        .filter_map(|x| x.mask.as_deref().filter(|m| !m.is_empty()))
        .any(|m| b.iter().any(|y| y.mask.as_deref() == Some(m)))
}

/// The health part of a connection: what provider news can change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Status.
    pub status: ConnectionStatus,
    /// Provider error code behind `pending_reauth` / `error` / `disconnected`.
    pub error_code: Option<String>,
    /// Provider error message.
    pub error_message: Option<String>,
    /// Announced end of access (unix seconds).
    pub access_expires_at: Option<Timestamp>,
    /// New accounts can be shared.
    pub new_accounts_available: bool,
}

impl Connection {
    /// The health fields of this connection.
    pub fn health(&self) -> Health {
        Health {
            status: self.status,
            error_code: self.error_code.clone(),
            error_message: self.error_message.clone(),
            access_expires_at: self.access_expires_at,
            new_accounts_available: self.new_accounts_available,
        }
    }
}

/// News about a connection's health, from a provider webhook, a pulled
/// health check, or a relink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Login required / credentials invalid / locked: the person must sign in again.
    ReauthRequired {
        /// Provider code, e.g. `ITEM_LOGIN_REQUIRED`.
        code: String,
        /// Provider message.
        message: String,
    },
    /// Another provider-reported error on the connection.
    Failing {
        /// Provider code.
        code: String,
        /// Provider message.
        message: String,
    },
    /// Consent ends at this time unless renewed (unix seconds).
    Expiring {
        /// When access ends.
        at: Timestamp,
    },
    /// The person or the bank revoked access.
    Revoked {
        /// Provider code, e.g. `USER_PERMISSION_REVOKED`.
        code: String,
    },
    /// The provider found accounts not shared yet.
    NewAccounts,
    /// Working again (Plaid `LOGIN_REPAIRED`, or a clean health check).
    Repaired,
    /// A relink session succeeded.
    Relinked,
}

/// What a [`Signal`] changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The new health.
    pub health: Health,
    /// Why, as sent in `connection.status_changed` (`reason`).
    pub reason: &'static str,
    /// Send `connection.access_expiring` (only the first time an end is announced).
    pub expiring_notice: bool,
}

/// Apply `signal` to `h`: the new health, or `None` when nothing changes
/// (so a redelivered signal changes nothing twice). A disconnected
/// connection never changes.
pub fn apply_signal(h: &Health, signal: &Signal) -> Option<Outcome> {
    if h.status == ConnectionStatus::Disconnected {
        return None;
    }
    let mut next = h.clone();
    let mut expiring_notice = false;
    let reason = match signal {
        Signal::ReauthRequired { code, message } => {
            next.status = ConnectionStatus::PendingReauth;
            next.error_code = Some(code.clone());
            next.error_message = Some(message.clone());
            "reauth_required"
        }
        Signal::Failing { code, message } => {
            next.status = ConnectionStatus::Error;
            next.error_code = Some(code.clone());
            next.error_message = Some(message.clone());
            "provider_error"
        }
        Signal::Expiring { at } => {
            next.access_expires_at = Some(*at);
            expiring_notice = h.access_expires_at.is_none();
            "access_expiring"
        }
        Signal::Revoked { code } => {
            next.status = ConnectionStatus::Disconnected;
            next.error_code = Some(code.clone());
            next.error_message = Some("access was revoked at the bank or the provider".into());
            "access_revoked"
        }
        Signal::NewAccounts => {
            next.new_accounts_available = true;
            "new_accounts_available"
        }
        Signal::Repaired => {
            if matches!(
                h.status,
                ConnectionStatus::PendingReauth | ConnectionStatus::Error
            ) {
                next.status = ConnectionStatus::Active;
                next.error_code = None;
                next.error_message = None;
            }
            "repaired"
        }
        Signal::Relinked => {
            next = Health {
                status: ConnectionStatus::Active,
                error_code: None,
                error_message: None,
                access_expires_at: None,
                new_accounts_available: false,
            };
            "relinked"
        }
    };
    (next != *h).then_some(Outcome {
        health: next,
        reason,
        expiring_notice,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Health {
        Health {
            status: ConnectionStatus::Active,
            error_code: None,
            error_message: None,
            access_expires_at: None,
            new_accounts_available: false,
        }
    }

    #[test]
    fn reauth_then_repair_and_no_change_twice() {
        let s = Signal::ReauthRequired {
            code: "ITEM_LOGIN_REQUIRED".into(),
            message: "m".into(),
        };
        let out = apply_signal(&healthy(), &s).expect("changes");
        assert_eq!(out.health.status, ConnectionStatus::PendingReauth);
        assert_eq!(out.reason, "reauth_required");
        assert_eq!(apply_signal(&out.health, &s), None);
        let back = apply_signal(&out.health, &Signal::Repaired).expect("repaired");
        assert_eq!(back.health, healthy());
        assert_eq!(apply_signal(&healthy(), &Signal::Repaired), None);
    }

    #[test]
    fn expiring_notice_only_once() {
        let first = apply_signal(&healthy(), &Signal::Expiring { at: 100 }).expect("set");
        assert!(first.expiring_notice);
        assert_eq!(
            apply_signal(&first.health, &Signal::Expiring { at: 100 }),
            None
        );
        let moved = apply_signal(&first.health, &Signal::Expiring { at: 200 }).expect("moved");
        assert!(!moved.expiring_notice);
    }

    #[test]
    fn disconnected_never_changes_and_relink_clears() {
        let gone = apply_signal(&healthy(), &Signal::Revoked { code: "X".into() })
            .expect("revoked")
            .health;
        assert_eq!(gone.status, ConnectionStatus::Disconnected);
        assert_eq!(apply_signal(&gone, &Signal::Relinked), None);
        let mut h = healthy();
        h.new_accounts_available = true;
        h.access_expires_at = Some(5);
        assert_eq!(
            apply_signal(&h, &Signal::Relinked).map(|o| o.health),
            Some(healthy())
        );
    }

    #[test]
    fn overlap_by_mask() {
        let acc = |m: Option<&str>| Account {
            id: "a".into(),
            name: "n".into(),
            mask: m.map(str::to_owned),
            kind: "depository".into(),
            subtype: None,
        };
        assert!(masks_overlap(
            &[acc(Some("1234"))],
            &[acc(None), acc(Some("1234"))]
        ));
        assert!(!masks_overlap(&[acc(None)], &[acc(None)]));
        assert!(!masks_overlap(&[acc(Some("1"))], &[acc(Some("2"))]));
    }
}
