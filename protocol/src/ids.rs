//! Identities that travel on the wire and in topic names.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Maximum length of an agent id in bytes. Agent ids appear in MQTT topic names and database keys.
pub const AGENT_ID_MAX_LEN: usize = 64;

/// An invalid identifier, with the text that was rejected and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct InvalidId {
    pub kind: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// The identity of one agent. The agent derives it from its own key pair (not from the machine-id,
/// which cloned images share), so it is stable across restarts and unique per installation.
///
/// It is 1 to 64 characters of `[a-z0-9_-]`, so it can stand as one MQTT topic level without
/// escaping and can never contain the wildcards `+` and `#` or a level separator.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentId(String);

impl AgentId {
    /// Parses an agent id, rejecting anything that could not stand as one topic level.
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        let invalid = |reason| InvalidId {
            kind: "agent id",
            value: value.chars().take(80).collect(),
            reason,
        };
        if value.is_empty() {
            return Err(invalid("it is empty"));
        }
        if value.len() > AGENT_ID_MAX_LEN {
            return Err(invalid("it is longer than 64 characters"));
        }
        let allowed =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        if !value.chars().all(allowed) {
            return Err(invalid(
                "only lowercase letters, digits, '-' and '_' are allowed",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// Derives the agent id from the agent's public key: the first 16 bytes of its SHA-256 digest,
    /// in lowercase hex. The caller computes the digest.
    pub fn from_public_key_digest(digest: &[u8; 32]) -> Self {
        Self(hex(&digest[..16]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AgentId {
    type Error = InvalidId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<AgentId> for String {
    fn from(id: AgentId) -> Self {
        id.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A random identifier the agent draws each time its process starts. Report sequence numbers start
/// again at 1 under every new boot id, so `(agent_id, boot_id, seq)` identifies one report for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BootId(pub [u8; 16]);

impl BootId {
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses the 32-character hex form that [`BootId::to_hex`] writes.
    pub fn from_hex(value: &str) -> Result<Self, InvalidId> {
        parse_hex16(value).map(Self).ok_or_else(|| InvalidId {
            kind: "boot id",
            value: value.chars().take(80).collect(),
            reason: "expected 32 hexadecimal digits",
        })
    }
}

impl fmt::Display for BootId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The identity of one order sent to an agent; receivers de-duplicate orders on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderId(pub [u8; 16]);

impl OrderId {
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
    out
}

fn parse_hex16(value: &str) -> Option<[u8; 16]> {
    if value.len() != 32 || !value.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(&value[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_id_accepts_topic_safe_text() {
        assert!(AgentId::parse("3f2a-gw_01").is_ok());
    }

    #[test]
    fn agent_id_rejects_wildcards_and_separators() {
        for bad in ["", "a/b", "a+", "#", "UPPER", "sp ace", &"a".repeat(65)] {
            assert!(AgentId::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn agent_id_from_digest_is_32_hex_digits() {
        let mut digest = [0u8; 32];
        digest[0] = 0xab;
        digest[15] = 0x01;
        digest[16] = 0xff;
        let id = AgentId::from_public_key_digest(&digest);
        assert_eq!(id.as_str(), "ab000000000000000000000000000001");
    }

    #[test]
    fn boot_id_hex_round_trip() {
        let id = BootId([7; 16]);
        assert_eq!(BootId::from_hex(&id.to_hex()), Ok(id));
        assert!(BootId::from_hex("xyz").is_err());
    }
}
