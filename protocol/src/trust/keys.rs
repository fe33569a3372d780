//! Ed25519 signing keys, their roles and ids, the signing-key file format and domain-separated
//! signatures.
//!
//! # Signing-key file
//!
//! A signing key is stored as text, in the style of PEM (RFC 7468) with RFC 1421 headers:
//!
//! ```text
//! -----BEGIN TIDEGATE SIGNING KEY-----
//! Format: 1
//! Role: security
//! Key-Id: 3f0c61a5d2e4b7c9
//!
//! 3053020101300506032b657004220420...
//! -----END TIDEGATE SIGNING KEY-----
//! ```
//!
//! The body is the PKCS#8 document of the Ed25519 key in hexadecimal, 64 digits a line. `Role` is
//! `root`, `security` or `ot`. `Key-Id` is checked against the key on loading, so a file whose
//! header and key disagree is rejected. Both PKCS#8 v2 (what [`SigningKey::generate`] writes) and
//! v1 (what `openssl genpkey -algorithm ed25519` writes) are read.
//!
//! The file contains the private key unencrypted, so the operator's tooling must keep it readable by
//! its owner only, on a machine other than the server.
//!
//! # Public key text
//!
//! [`PublicKey`] displays as one line, `ROLE KEY-ID PUBLIC-KEY-HEX`, and [`PublicKey::parse`] reads
//! that line back, so public keys can be handed around when a trust root is put together.

use std::fmt;
use std::str::FromStr;

use ring::rand::SecureRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

use super::codec::FormatError;
use super::{from_hex, sha256, to_hex, MAX_SIGNATURES};
use crate::InvalidId;

/// The kind of document a key may sign. postcard encodes the variant index, so roles are only appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Signs new versions of the trust root.
    Root,
    /// Signs remediation bundles: what may change.
    Security,
    /// Signs maintenance-window schedules: when a tier may change.
    Ot,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Root, Role::Security, Role::Ot];

    /// Returns the name used in key files, on the command line and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::Security => "security",
            Self::Ot => "ot",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name other than `root`, `security` or `ot`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid role {value:?}: expected root, security or ot")]
pub struct InvalidRole {
    pub value: String,
}

impl FromStr for Role {
    type Err = InvalidRole;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "root" => Ok(Self::Root),
            "security" => Ok(Self::Security),
            "ot" => Ok(Self::Ot),
            _ => Err(InvalidRole {
                value: value.chars().take(40).collect(),
            }),
        }
    }
}

/// The id of a public key: the first 8 bytes of the SHA-256 digest of its 32 key bytes, shown as
/// 16 lowercase hex digits.
///
/// The id only selects which listed key to try. A signature is always checked against the key bytes
/// that the trust root lists under the id, so a key made to collide with a listed id gains nothing.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyId([u8; 8]);

impl KeyId {
    /// Derives the id of an Ed25519 public key.
    pub fn of_public_key(public_key: &[u8; 32]) -> Self {
        let digest = sha256(public_key);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        Self(id)
    }

    /// Parses the 16-digit hex form that `Display` writes.
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        let bytes = from_hex(value)
            .filter(|bytes| bytes.len() == 8)
            .ok_or_else(|| InvalidId {
                kind: "key id",
                value: value.chars().take(80).collect(),
                reason: "expected 16 hexadecimal digits",
            })?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes);
        Ok(Self(id))
    }

    pub fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// The kind of document a signature covers. Each kind has its own context string, and a signature
/// covers `context || 0x00 || document bytes`, so a signature made for one kind of document never
/// verifies as another kind. postcard never encodes this type: it only selects the context string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningContext {
    /// A trust root document, signed by root keys.
    TrustRoot,
    /// A bundle manifest, signed by security keys.
    BundleManifest,
    /// A maintenance-window schedule, signed by OT keys.
    WindowSchedule,
}

impl SigningContext {
    /// Returns the context string that starts every signed message of this kind.
    pub fn label(self) -> &'static str {
        match self {
            Self::TrustRoot => "tidegate trust root v1",
            Self::BundleManifest => "tidegate bundle manifest v1",
            Self::WindowSchedule => "tidegate window schedule v1",
        }
    }

    /// Builds the exact bytes that a signature over `document` covers.
    pub fn signed_message(self, document: &[u8]) -> Vec<u8> {
        let label = self.label().as_bytes();
        let mut message = Vec::with_capacity(label.len() + 1 + document.len());
        message.extend_from_slice(label);
        message.push(0);
        message.extend_from_slice(document);
        message
    }
}

/// One signature on a root or bundle file: the signer's key id and the 64-byte Ed25519 signature.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub key_id: KeyId,
    #[serde(with = "signature_bytes")]
    pub bytes: [u8; 64],
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Signature {{ key_id: {}, bytes: {} }}",
            self.key_id,
            to_hex(&self.bytes)
        )
    }
}

/// serde for `[u8; 64]`, which serde's derive does not cover: a tuple of 64 bytes, which postcard
/// writes as the 64 bytes themselves.
mod signature_bytes {
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};
    use serde::ser::{SerializeTuple, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer>(bytes: &[u8; 64], serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(64)?;
        for byte in bytes {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 64], D::Error> {
        struct BytesVisitor;

        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = [u8; 64];

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; 64], A::Error> {
                let mut bytes = [0u8; 64];
                for (index, slot) in bytes.iter_mut().enumerate() {
                    *slot = seq
                        .next_element()?
                        .ok_or_else(|| A::Error::invalid_length(index, &self))?;
                }
                Ok(bytes)
            }
        }

        deserializer.deserialize_tuple(64, BytesVisitor)
    }
}

/// Whether signing added a signature to a file. Ed25519 signatures are deterministic, so signing
/// the same bytes with the same key again gives the same signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignOutcome {
    /// The file had no signature by this key, and now has one.
    Added,
    /// The file already carried this key's signature over these bytes.
    AlreadySigned,
    /// The file carried a signature under this key's id that did not match. It was replaced.
    Replaced,
}

/// Adds `signature` to a file's signatures, or replaces an earlier signature under the same key id.
pub(crate) fn add_signature(
    signatures: &mut Vec<Signature>,
    signature: Signature,
    what: &'static str,
) -> Result<SignOutcome, FormatError> {
    if let Some(existing) = signatures
        .iter_mut()
        .find(|existing| existing.key_id == signature.key_id)
    {
        if *existing == signature {
            return Ok(SignOutcome::AlreadySigned);
        }
        *existing = signature;
        return Ok(SignOutcome::Replaced);
    }
    if signatures.len() >= MAX_SIGNATURES {
        return Err(FormatError::TooMany {
            what,
            items: "signatures",
            count: signatures.len() as u64 + 1,
            max: MAX_SIGNATURES as u64,
        });
    }
    signatures.push(signature);
    Ok(SignOutcome::Added)
}

/// A public key with its role, as a trust root lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    pub role: Role,
    /// Always [`KeyId::of_public_key`] of `bytes`; a trust root that lists another id is invalid.
    pub key_id: KeyId,
    pub bytes: [u8; 32],
}

impl PublicKey {
    /// Builds the entry for an Ed25519 public key, deriving its id.
    pub fn new(role: Role, bytes: [u8; 32]) -> Self {
        Self {
            role,
            key_id: KeyId::of_public_key(&bytes),
            bytes,
        }
    }

    /// Checks an Ed25519 signature made in `context` over `document`. The role is not checked
    /// here: callers decide which roles count.
    pub fn verify(&self, context: SigningContext, document: &[u8], signature: &[u8; 64]) -> bool {
        let message = context.signed_message(document);
        UnparsedPublicKey::new(&ED25519, &self.bytes)
            .verify(&message, signature)
            .is_ok()
    }

    /// Parses the one-line form `ROLE KEY-ID PUBLIC-KEY-HEX` that `Display` writes, checking that
    /// the key id belongs to the key.
    pub fn parse(line: &str) -> Result<Self, KeyError> {
        let invalid = |reason: String| KeyError::InvalidPublicKey { reason };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [role, key_id, key_hex] = fields.as_slice() else {
            return Err(invalid(format!(
                "expected 3 fields `ROLE KEY-ID PUBLIC-KEY-HEX`, found {}",
                fields.len()
            )));
        };
        let role: Role = role
            .parse()
            .map_err(|e: InvalidRole| invalid(e.to_string()))?;
        let stated = KeyId::parse(key_id).map_err(|e| invalid(e.to_string()))?;
        let bytes: [u8; 32] = from_hex(key_hex)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| invalid("the public key must be 64 hexadecimal digits".into()))?;
        let key = Self::new(role, bytes);
        if key.key_id != stated {
            return Err(KeyError::KeyIdMismatch {
                stated,
                actual: key.key_id,
            });
        }
        Ok(key)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.role, self.key_id, to_hex(&self.bytes))
    }
}

/// A failure to create, load or parse a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("failed to generate an Ed25519 key: the random number generator failed")]
    Generate,
    #[error(
        "invalid Ed25519 private key: {reason}; expected an unencrypted PKCS#8 v1 or v2 document"
    )]
    Pkcs8 { reason: String },
    #[error("invalid signing key file, line {line}: {reason}")]
    KeyFile { line: usize, reason: String },
    #[error("key id mismatch: the input states key id {stated}, but the key's id is {actual}")]
    KeyIdMismatch { stated: KeyId, actual: KeyId },
    #[error("invalid public key line: {reason}")]
    InvalidPublicKey { reason: String },
}

const KEY_FILE_BEGIN: &str = "-----BEGIN TIDEGATE SIGNING KEY-----";
const KEY_FILE_END: &str = "-----END TIDEGATE SIGNING KEY-----";
const KEY_FILE_FORMAT: &str = "1";
/// Hex digits per body line of a key file.
const KEY_FILE_LINE_DIGITS: usize = 64;

/// An Ed25519 private key with its role. `Debug` shows the role and key id, never the key.
///
/// NOTE: the PKCS#8 bytes are not overwritten when the key is dropped, because ring 0.17 offers no
/// zeroing and this crate adds no dependency for it.
pub struct SigningKey {
    role: Role,
    key_pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
    public_key: PublicKey,
}

impl SigningKey {
    /// Generates a new key for `role` from `rng`.
    pub fn generate(role: Role, rng: &dyn SecureRandom) -> Result<Self, KeyError> {
        let document = Ed25519KeyPair::generate_pkcs8(rng).map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8(role, document.as_ref())
    }

    /// Loads a key from an unencrypted PKCS#8 v1 or v2 document. A v2 document's public key must
    /// match its private key.
    pub fn from_pkcs8(role: Role, pkcs8: &[u8]) -> Result<Self, KeyError> {
        let key_pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).map_err(|error| KeyError::Pkcs8 {
                reason: error.to_string(),
            })?;
        let public_bytes: [u8; 32] = key_pair
            .public_key()
            .as_ref()
            .try_into()
            .expect("an Ed25519 public key is 32 bytes");
        Ok(Self {
            role,
            key_pair,
            pkcs8: pkcs8.to_vec(),
            public_key: PublicKey::new(role, public_bytes),
        })
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn key_id(&self) -> KeyId {
        self.public_key.key_id
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// Signs `document` in `context`. Callers that add the signature to a file use the file's own
    /// `sign`, which also checks the role.
    pub fn sign(&self, context: SigningContext, document: &[u8]) -> Signature {
        let signature = self.key_pair.sign(&context.signed_message(document));
        let bytes: [u8; 64] = signature
            .as_ref()
            .try_into()
            .expect("an Ed25519 signature is 64 bytes");
        Signature {
            key_id: self.key_id(),
            bytes,
        }
    }

    /// Writes the key in the signing-key file format of this module.
    pub fn to_key_file(&self) -> String {
        let mut out = String::new();
        out.push_str(KEY_FILE_BEGIN);
        out.push('\n');
        out.push_str(&format!("Format: {KEY_FILE_FORMAT}\n"));
        out.push_str(&format!("Role: {}\n", self.role));
        out.push_str(&format!("Key-Id: {}\n", self.key_id()));
        out.push('\n');
        let body = to_hex(&self.pkcs8);
        for chunk in body.as_bytes().chunks(KEY_FILE_LINE_DIGITS) {
            out.push_str(std::str::from_utf8(chunk).expect("hex digits are ASCII"));
            out.push('\n');
        }
        out.push_str(KEY_FILE_END);
        out.push('\n');
        out
    }

    /// Reads a key written by [`SigningKey::to_key_file`]. Blank lines around the armour and
    /// `\r\n` line ends are accepted; unknown or repeated headers are not.
    pub fn from_key_file(text: &str) -> Result<Self, KeyError> {
        let invalid = |line: usize, reason: String| KeyError::KeyFile { line, reason };
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(index, line)| (index + 1, line.trim_end()));

        let (line_number, first) = lines
            .by_ref()
            .find(|(_, line)| !line.is_empty())
            .ok_or_else(|| invalid(1, "the file is empty".into()))?;
        if first != KEY_FILE_BEGIN {
            return Err(invalid(line_number, format!("expected {KEY_FILE_BEGIN:?}")));
        }

        let mut format = None;
        let mut role = None;
        let mut stated_key_id = None;
        let mut last_line = line_number;
        for (line_number, line) in lines.by_ref() {
            last_line = line_number;
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(": ").ok_or_else(|| {
                invalid(
                    line_number,
                    "expected a header `Name: value` or a blank line before the key".into(),
                )
            })?;
            let slot_was_empty = match name {
                "Format" => format.replace((value.to_owned(), line_number)).is_none(),
                "Role" => {
                    let parsed: Role = value
                        .parse()
                        .map_err(|e: InvalidRole| invalid(line_number, e.to_string()))?;
                    role.replace(parsed).is_none()
                }
                "Key-Id" => {
                    let parsed =
                        KeyId::parse(value).map_err(|e| invalid(line_number, e.to_string()))?;
                    stated_key_id.replace(parsed).is_none()
                }
                other => {
                    return Err(invalid(
                        line_number,
                        format!("unknown header {other:?}; expected Format, Role and Key-Id"),
                    ))
                }
            };
            if !slot_was_empty {
                return Err(invalid(line_number, format!("header {name} appears twice")));
            }
        }

        let header_line = last_line;
        match format {
            Some((value, _)) if value == KEY_FILE_FORMAT => {}
            Some((other, line_number)) => {
                return Err(invalid(
                    line_number,
                    format!("unknown key file format {other:?}: this build reads format 1"),
                ))
            }
            None => return Err(invalid(header_line, "missing header Format".into())),
        }
        let role = role.ok_or_else(|| invalid(header_line, "missing header Role".into()))?;
        let stated_key_id =
            stated_key_id.ok_or_else(|| invalid(header_line, "missing header Key-Id".into()))?;

        let mut body = String::new();
        let mut ended = false;
        for (line_number, line) in lines.by_ref() {
            last_line = line_number;
            if line == KEY_FILE_END {
                ended = true;
                break;
            }
            if !line.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    line_number,
                    "the key body must be hexadecimal digits".into(),
                ));
            }
            body.push_str(line);
        }
        if !ended {
            return Err(invalid(last_line, format!("missing {KEY_FILE_END:?}")));
        }
        if let Some((line_number, _)) = lines.find(|(_, line)| !line.is_empty()) {
            return Err(invalid(
                line_number,
                format!("unexpected text after {KEY_FILE_END:?}"),
            ));
        }
        let pkcs8 = from_hex(&body).ok_or_else(|| {
            invalid(
                last_line,
                "the key body has an odd number of hex digits".into(),
            )
        })?;

        let key = Self::from_pkcs8(role, &pkcs8)?;
        if key.key_id() != stated_key_id {
            return Err(KeyError::KeyIdMismatch {
                stated: stated_key_id,
                actual: key.key_id(),
            });
        }
        Ok(key)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("role", &self.role)
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    fn key(role: Role) -> SigningKey {
        SigningKey::generate(role, &SystemRandom::new()).unwrap()
    }

    #[test]
    fn role_parses_its_names() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        let error = "admin".parse::<Role>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid role \"admin\": expected root, security or ot"
        );
    }

    #[test]
    fn key_id_is_sha256_prefix_in_hex() {
        // SHA-256 of 32 zero bytes is 66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925.
        let id = KeyId::of_public_key(&[0u8; 32]);
        assert_eq!(id.to_string(), "66687aadf862bd77");
        assert_eq!(KeyId::parse("66687aadf862bd77"), Ok(id));
        assert!(KeyId::parse("66687aad").is_err());
    }

    #[test]
    fn signature_verifies_only_in_its_context() {
        let key = key(Role::Security);
        let signature = key.sign(SigningContext::BundleManifest, b"manifest");
        let public = key.public_key();
        assert!(public.verify(
            SigningContext::BundleManifest,
            b"manifest",
            &signature.bytes
        ));
        assert!(!public.verify(SigningContext::TrustRoot, b"manifest", &signature.bytes));
        assert!(!public.verify(
            SigningContext::WindowSchedule,
            b"manifest",
            &signature.bytes
        ));
        assert!(!public.verify(
            SigningContext::BundleManifest,
            b"manifesT",
            &signature.bytes
        ));
    }

    #[test]
    fn signed_message_is_context_zero_document() {
        let message = SigningContext::TrustRoot.signed_message(b"ab");
        assert_eq!(message, b"tidegate trust root v1\0ab");
    }

    #[test]
    fn key_file_round_trip() {
        let original = key(Role::Ot);
        let text = original.to_key_file();
        assert!(text.starts_with("-----BEGIN TIDEGATE SIGNING KEY-----\nFormat: 1\nRole: ot\n"));
        let loaded = SigningKey::from_key_file(&text).unwrap();
        assert_eq!(loaded.role(), Role::Ot);
        assert_eq!(loaded.public_key(), original.public_key());

        let crlf = text.replace('\n', "\r\n");
        assert_eq!(
            SigningKey::from_key_file(&crlf).unwrap().key_id(),
            original.key_id()
        );
    }

    #[test]
    fn signing_key_debug_hides_private_key() {
        let key = key(Role::Root);
        let debug = format!("{key:?}");
        assert!(debug.contains(&key.key_id().to_string()));
        assert!(!debug.contains(&to_hex(&key.pkcs8)));
    }

    #[test]
    fn public_key_line_round_trip() {
        let key = key(Role::Security);
        let line = key.public_key().to_string();
        assert_eq!(PublicKey::parse(&line).unwrap(), *key.public_key());
    }
}
