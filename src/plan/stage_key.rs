//! [`StageKey`]: a stage's cache key as one type, from the plan through the executors, the cache and the reports.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A stage's cache key: the SHA-256, in 64 lower-case hex digits, of its key inputs' canonical JSON
/// ([`super::KeyInputs::key`]). It names the entry's folder in the cache. Listings show its [`StageKey::short`] form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StageKey(String);

/// Digits of a key that labels, listings and Slurm job names show.
const SHORT: usize = 12;

impl StageKey {
    /// A key as written in a manifest, a folder name or a report: exactly 64 lower-case hex digits.
    pub fn parse(text: &str) -> Result<StageKey, NotAKey> {
        match text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            true => Ok(StageKey(text.to_string())),
            false => Err(NotAKey(text.chars().take(80).collect())),
        }
    }

    /// The key of a SHA-256 hex digest computed by mgat (always well formed).
    pub(super) fn from_digest(hex: String) -> StageKey {
        debug_assert!(StageKey::parse(&hex).is_ok(), "{hex}");
        StageKey(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits.
    pub fn short(&self) -> &str {
        short(&self.0)
    }
}

/// The first 12 characters of a key or a stage id (both SHA-256 hex), as labels and listings show them.
pub fn short(hex: &str) -> &str {
    hex.get(..SHORT).unwrap_or(hex)
}

impl fmt::Display for StageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for StageKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<StageKey> for String {
    fn from(key: StageKey) -> String {
        key.0
    }
}

impl TryFrom<String> for StageKey {
    type Error = NotAKey;

    fn try_from(text: String) -> Result<StageKey, NotAKey> {
        StageKey::parse(&text)
    }
}

/// Text that is not a stage key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a stage key (64 lower-case hex digits)")]
pub struct NotAKey(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_64_lower_case_hex_digits_and_reads_back_through_serde() {
        let hex = "0123456789abcdef".repeat(4);
        let key = StageKey::parse(&hex).unwrap();
        assert_eq!(key.short(), "0123456789ab");
        assert_eq!(serde_json::to_string(&key).unwrap(), format!("\"{hex}\""));
        assert_eq!(
            serde_json::from_str::<StageKey>(&format!("\"{hex}\"")).unwrap(),
            key
        );
        for bad in [
            &hex[..63],
            &hex.to_uppercase(),
            &format!("{}g", &hex[..63]),
            "",
            "../etc",
        ] {
            assert!(StageKey::parse(bad).is_err(), "{bad}");
            assert!(
                serde_json::from_str::<StageKey>(&format!("\"{bad}\"")).is_err(),
                "{bad}"
            );
        }
        assert_eq!(short("abc"), "abc");
    }
}
