//! Bank connections as the API shows them (never any credential).

use serde::Serialize;

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
}
