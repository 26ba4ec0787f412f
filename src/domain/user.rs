//! Household members.

use serde::{Deserialize, Serialize};

use super::time::{self, Timestamp};

/// A household member.
#[derive(Debug, Clone, Serialize)]
pub struct User {
    /// UUID.
    pub id: String,
    /// Base62 short id.
    pub short_id: String,
    /// Display name.
    pub name: String,
    /// Optional email (`null` when unset).
    pub email: Option<String>,
    /// Creation time.
    #[serde(serialize_with = "time::ser")]
    pub created_at: Timestamp,
}

/// The POST /users body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Required, trimmed, 1–200 characters.
    pub name: String,
    /// Optional email address.
    #[serde(default)]
    pub email: Option<String>,
}

impl CreateUser {
    /// Validate and normalise; the error names the field.
    pub fn validate(self) -> Result<CreateUser, String> {
        let name = self.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
            return Err("name: must be 1 to 200 characters, without control characters".into());
        }
        let email = match self.email.map(|e| e.trim().to_owned()) {
            None => None,
            Some(e) if e.is_empty() => None,
            Some(e) => {
                let valid = e.len() <= 254
                    && !e.chars().any(|c| c.is_whitespace() || c.is_control())
                    && e.split_once('@')
                        .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.contains('@'));
                if !valid {
                    return Err("email: must be an email address like name@example.com".into());
                }
                Some(e)
            }
        };
        Ok(CreateUser { name, email })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, email: Option<&str>) -> Result<CreateUser, String> {
        CreateUser {
            name: name.into(),
            email: email.map(Into::into),
        }
        .validate()
    }

    #[test]
    fn names_and_emails() {
        assert_eq!(check("  Ana ", None).map(|u| u.name), Ok("Ana".into()));
        assert!(check("   ", None).is_err());
        assert!(check(&"x".repeat(201), None).is_err());
        assert_eq!(check("Ana", Some("")).map(|u| u.email), Ok(None));
        assert!(check("Ana", Some("ana@example.com")).is_ok());
        for bad in [
            "ana",
            "@example.com",
            "ana@localhost",
            "a b@example.com",
            "a@b@c.com",
        ] {
            assert!(check("Ana", Some(bad)).is_err(), "{bad}");
        }
    }
}
