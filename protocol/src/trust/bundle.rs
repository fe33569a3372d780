//! Remediation bundles: the manifest that security signs, its steps and payload references, and
//! the bundle file that carries the manifest, the payload files and the signatures together.
//!
//! Nothing here decides whether a bundle may be applied; [`crate::trust::verify`] does. Decoding a
//! bundle file checks its format and size limits only, so [`inspect_bundle`] can show any
//! well-formed file to a person.
//!
//! # Bundle file
//!
//! | bytes | content |
//! | --- | --- |
//! | 4 | magic `TGBD` |
//! | 1 | format, 1 |
//! | varint + n | the manifest: canonical postcard of [`BundleManifest`], at most [`MAX_MANIFEST_BYTES`] |
//! | varint | number of payloads, at most [`MAX_PAYLOADS`] |
//! | per payload | name (varint length + UTF-8, at most [`MAX_PAYLOAD_NAME_LEN`] bytes), content (varint length + bytes) |
//! | varint | number of signatures, at most [`MAX_SIGNATURES`] |
//! | 72 each | signatures: 8-byte key id, 64-byte Ed25519 signature |
//!
//! The whole file is at most [`MAX_BUNDLE_FILE_BYTES`]. Signatures cover the manifest bytes in the
//! [`SigningContext::BundleManifest`] context; the manifest pins every payload by SHA-256 and size,
//! so the signatures cover the payloads too. The [`BundleHash`] is the SHA-256 of the manifest
//! bytes.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use super::codec::{self, FormatError, Framing};
use super::keys::{add_signature, KeyId, Role, SignOutcome, Signature, SigningContext, SigningKey};
use super::verify::RejectRule;
use super::{from_hex, sha256, to_hex, validate_name, MAX_SIGNATURES};
use crate::InvalidId;

/// Maximum size of a bundle file. An agent keeps the whole file in memory while it verifies it,
/// and it does so before any signature has been checked, so this bounds what a forged file can
/// cost. Content beyond it has to be split over several bundles.
///
/// NOTE: 64 MiB is an estimate of what a gateway can spare for a moment, not a measured figure.
pub const MAX_BUNDLE_FILE_BYTES: usize = 64 * 1024 * 1024;

/// Maximum size of an encoded manifest. It leaves room for [`MAX_STEPS`] steps of several hundred
/// bytes each, and it bounds the bytes each signature check hashes.
pub const MAX_MANIFEST_BYTES: usize = 1024 * 1024;

/// Maximum number of payload files in a bundle. Each one costs a SHA-256 pass and a lookup, and a
/// bundle normally carries a few.
pub const MAX_PAYLOADS: usize = 256;

/// Maximum length in bytes of a payload name, enough for Debian package file names such as
/// `openssl_3.0.15-1~deb12u1_amd64.deb`.
pub const MAX_PAYLOAD_NAME_LEN: usize = 128;

/// Maximum number of steps in a manifest. A decoded step takes 80 bytes of memory on 64-bit
/// targets from as little as 2 encoded bytes, so the count is bounded while decoding.
pub const MAX_STEPS: usize = 1024;

/// Maximum number of arguments of a [`Step::RunCommand`] command, bounded while decoding for the
/// same reason as [`MAX_STEPS`].
pub const MAX_COMMAND_ARGS: usize = 256;

/// Maximum number of entries in each list of a [`TargetSelector`].
pub const MAX_TARGET_ENTRIES: usize = 256;

/// Maximum length in bytes of an OS name or tag in a [`TargetSelector`].
pub const MAX_TARGET_VALUE_LEN: usize = 64;

const BUNDLE_FRAMING: Framing = Framing {
    what: "bundle file",
    magic: b"TGBD",
    format: 1,
    max_bytes: MAX_BUNDLE_FILE_BYTES,
};

/// Defines a validated name newtype with the rules of [`validate_name`].
macro_rules! name_newtype {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            #[doc = concat!("Parses a ", $kind, ": 1 to 64 characters of `[a-z0-9_-]`.")]
            pub fn parse(value: &str) -> Result<Self, InvalidId> {
                validate_name($kind, value)?;
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_newtype!(
    /// The id of one bundle, such as `openssl-2026-05`. It names the bundle in the journal, in
    /// events and in directories on the agent, so it is restricted like an agent id.
    BundleId,
    "bundle id"
);

name_newtype!(
    /// A stream of bundles whose sequence numbers only grow, such as `openssl` or
    /// `baseline-office`. An agent keeps one high-water mark per stream.
    StreamName,
    "stream name"
);

/// The SHA-256 of a bundle's manifest bytes. Two bundles with an equal hash are the same bundle,
/// which is what "already applied" compares.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BundleHash(pub [u8; 32]);

impl BundleHash {
    pub fn of_manifest(manifest_bytes: &[u8]) -> Self {
        Self(sha256(manifest_bytes))
    }

    /// Parses the 64-digit hex form that `Display` writes.
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        from_hex(value)
            .and_then(|bytes| bytes.try_into().ok())
            .map(Self)
            .ok_or_else(|| InvalidId {
                kind: "bundle hash",
                value: value.chars().take(80).collect(),
                reason: "expected 64 hexadecimal digits",
            })
    }
}

impl fmt::Display for BundleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl fmt::Debug for BundleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BundleHash({self})")
    }
}

/// Selection of the hosts a bundle is meant for. An empty list places no restriction on that attribute.
///
/// NOTE: matching a host against the selector is left to the agent and the server; this type
/// only carries and validates the lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetSelector {
    /// Tier names: 1 to 64 characters of `[a-z0-9_-]`, like a [`BundleId`].
    #[serde(deserialize_with = "deserialize_target_list")]
    pub tiers: Vec<String>,
    #[serde(deserialize_with = "deserialize_target_list")]
    pub os: Vec<String>,
    #[serde(deserialize_with = "deserialize_target_list")]
    pub tags: Vec<String>,
}

/// The action a systemd step applies to its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnitAction {
    Enable,
    Disable,
    Start,
    Stop,
    Restart,
    Mask,
    Unmask,
}

/// One action of a bundle, as the manifest states it. The agent's executor gives each step its
/// probe, apply, verify and revert.
///
/// postcard encodes the variant index and then the fields in order, so variants are only ever
/// appended, and a variant's fields never change once a release has signed bundles with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Writes the content of payload `payload` to `path` with permission bits `mode`, owned by
    /// `owner` and `group`. The owner and group are names looked up in the root's `etc/passwd`
    /// and `etc/group`, or decimal ids.
    WriteFile {
        path: String,
        payload: String,
        mode: u32,
        owner: String,
        group: String,
    },
    /// Makes `path` contain `line`: the first line that starts with `match_prefix` is replaced,
    /// and `line` is appended when no line does.
    EnsureConfigLine {
        path: String,
        match_prefix: String,
        line: String,
    },
    /// Installs Debian package `package` at `version` from the `.deb` in payload `payload`.
    InstallDeb {
        package: String,
        version: String,
        payload: String,
    },
    /// Upgrades the installed Debian package `package` to `version` from payload `payload`.
    UpgradeDeb {
        package: String,
        version: String,
        payload: String,
    },
    /// Removes Debian package `package`.
    RemoveDeb { package: String },
    /// Sets kernel parameter `key` (such as `net.ipv4.ip_forward`) to `value`.
    Sysctl { key: String, value: String },
    /// Applies `action` to systemd unit `unit`.
    SystemdUnit { unit: String, action: UnitAction },
    /// Locks local account `user`, so that it can no longer log in with a password.
    LockAccount { user: String },
    /// Runs `argv` without a shell. `revert_argv` undoes it; `None` declares the step
    /// irreversible, which a policy has to allow.
    RunCommand {
        #[serde(deserialize_with = "deserialize_command")]
        argv: Vec<String>,
        #[serde(deserialize_with = "deserialize_optional_command")]
        revert_argv: Option<Vec<String>>,
    },
    /// Unlocks local account `user`, undoing a lock of its password.
    UnlockAccount { user: String },
    /// Sets the expiry date of local account `user` in the past, so that it can no longer log in
    /// by any means.
    ExpireAccount { user: String },
    /// Removes the key with SHA-256 fingerprint `key_fingerprint` from `user`'s
    /// `~/.ssh/authorized_keys`. The fingerprint has the form `ssh-keygen -l` prints,
    /// `SHA256:` followed by 43 characters of unpadded base64.
    RemoveAuthorizedKey {
        user: String,
        key_fingerprint: String,
    },
    /// Removes local account `user` from the account databases. It cannot be reverted, because the
    /// files the account owned elsewhere are kept with a number that no longer names anyone.
    RemoveAccount { user: String },
}

impl Step {
    /// Returns a short name of the step type, for logs and `bundle inspect`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::WriteFile { .. } => "write-file",
            Self::EnsureConfigLine { .. } => "ensure-config-line",
            Self::InstallDeb { .. } => "install-deb",
            Self::UpgradeDeb { .. } => "upgrade-deb",
            Self::RemoveDeb { .. } => "remove-deb",
            Self::Sysctl { .. } => "sysctl",
            Self::SystemdUnit { .. } => "systemd-unit",
            Self::LockAccount { .. } => "lock-account",
            Self::RunCommand { .. } => "run-command",
            Self::UnlockAccount { .. } => "unlock-account",
            Self::ExpireAccount { .. } => "expire-account",
            Self::RemoveAuthorizedKey { .. } => "remove-authorized-key",
            Self::RemoveAccount { .. } => "remove-account",
        }
    }

    /// Whether the step runs a command the bundle supplies, which the trust root must allow for
    /// the agent's tier.
    pub fn runs_command(&self) -> bool {
        matches!(self, Self::RunCommand { .. })
    }

    /// Returns the name of the payload the step reads, if it reads one.
    pub fn payload(&self) -> Option<&str> {
        match self {
            Self::WriteFile { payload, .. }
            | Self::InstallDeb { payload, .. }
            | Self::UpgradeDeb { payload, .. } => Some(payload),
            _ => None,
        }
    }
}

/// A payload file as the manifest pins it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadRef {
    /// File name: 1 to 128 bytes of `[A-Za-z0-9._+~-]`, not starting with a dot.
    pub name: String,
    pub sha256: [u8; 32],
    pub size: u64,
}

impl PayloadRef {
    /// Describes `content` under `name`, for building a manifest.
    pub fn of_content(name: &str, content: &[u8]) -> Self {
        Self {
            name: name.to_owned(),
            sha256: sha256(content),
            size: content.len() as u64,
        }
    }
}

/// The signed part of a bundle. postcard encodes the fields in order, so fields are never
/// reordered; a new field needs a new bundle file format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleManifest {
    pub bundle_id: BundleId,
    pub stream: StreamName,
    /// Grows with every bundle of the stream; an agent never applies a lower one after a higher.
    pub sequence: u64,
    /// The bundle is valid from this instant on, in seconds since the Unix epoch.
    pub not_before_unix_s: i64,
    /// The bundle is expired from this instant on: `expires_unix_s <= now` is expired.
    pub expires_unix_s: i64,
    pub target: TargetSelector,
    #[serde(deserialize_with = "deserialize_steps")]
    pub steps: Vec<Step>,
    #[serde(deserialize_with = "deserialize_payload_refs")]
    pub payloads: Vec<PayloadRef>,
    /// The permissions the bundle gives its executor, and the checks that decide whether it stays
    /// applied.
    pub execution: ExecutionPolicy,
}

/// Maximum number of health checks in a manifest.
pub const MAX_HEALTH_CHECKS: usize = 64;

/// The permissions a bundle grants explicitly, and the health checks run after all its steps.
///
/// Both switches default to off, so a bundle that sets neither runs no command and no step that
/// cannot be undone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionPolicy {
    /// Steps that cannot be reverted (such as removing an account) may run. Without it the agent
    /// rejects a bundle that has one, before any step starts.
    pub accepts_irreversible: bool,
    /// The bundle declares that it runs commands ([`Step::RunCommand`]). The agent runs them only
    /// when this is set and the trust root allows commands for its tier.
    pub runs_commands: bool,
    /// Checks run after every step has applied; one that fails reverts the bundle.
    #[serde(deserialize_with = "deserialize_health_checks")]
    pub health_checks: Vec<HealthCheck>,
}

/// A check of the host's health after a bundle's steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealthCheck {
    /// systemd unit `unit` is active, as `systemctl is-active` through the agent's command runner
    /// reports it.
    UnitActive { unit: String },
    /// Something listens on TCP port `port` of 127.0.0.1.
    TcpListening { port: u16 },
    /// `argv` (no shell) exits with status 0. Counts as a command for
    /// [`ExecutionPolicy::runs_commands`].
    CommandSucceeds {
        #[serde(deserialize_with = "deserialize_command")]
        argv: Vec<String>,
    },
}

impl HealthCheck {
    /// Describes the check in a few words, for logs and reports.
    pub fn describe(&self) -> String {
        match self {
            Self::UnitActive { unit } => format!("unit {unit} active"),
            Self::TcpListening { port } => format!("TCP port {port} listening on 127.0.0.1"),
            Self::CommandSucceeds { argv } => format!("command {argv:?} exits 0"),
        }
    }
}

impl BundleManifest {
    /// Checks what the types cannot: `not_before` before `expires`, at least one step, list
    /// lengths within their limits, valid and unique payload names, every payload a step reads
    /// listed, and valid target entries.
    pub fn validate(&self) -> Result<(), BundleError> {
        let invalid = |reason: String| BundleError::InvalidManifest {
            bundle_id: self.bundle_id.to_string(),
            reason,
        };
        if self.not_before_unix_s >= self.expires_unix_s {
            return Err(invalid(format!(
                "expires ({}) must be later than not_before ({})",
                self.expires_unix_s, self.not_before_unix_s
            )));
        }
        if self.steps.is_empty() {
            return Err(invalid("it has no steps".into()));
        }
        check_count(self.steps.len(), MAX_STEPS, "steps").map_err(invalid)?;
        check_count(self.payloads.len(), MAX_PAYLOADS, "payloads").map_err(invalid)?;

        let mut names = BTreeSet::new();
        let mut total_size = 0u64;
        for payload in &self.payloads {
            validate_payload_name(&payload.name).map_err(invalid)?;
            if !names.insert(payload.name.as_str()) {
                return Err(invalid(format!(
                    "payload {:?} is listed twice",
                    payload.name
                )));
            }
            total_size = total_size.saturating_add(payload.size);
        }
        if total_size > MAX_BUNDLE_FILE_BYTES as u64 {
            return Err(invalid(format!(
                "its payloads add up to {total_size} bytes, more than a bundle file can hold \
                 ({MAX_BUNDLE_FILE_BYTES} bytes)"
            )));
        }

        for (index, step) in self.steps.iter().enumerate() {
            if let Some(payload) = step.payload() {
                if !names.contains(payload) {
                    return Err(invalid(format!(
                        "step {index} ({}) reads payload {payload:?}, which the manifest does not list",
                        step.kind()
                    )));
                }
            }
            if let Step::RunCommand { argv, revert_argv } = step {
                for command in std::iter::once(argv).chain(revert_argv) {
                    if command.is_empty() {
                        return Err(invalid(format!(
                            "step {index} (run-command) has an empty command"
                        )));
                    }
                    check_count(command.len(), MAX_COMMAND_ARGS, "command arguments")
                        .map_err(invalid)?;
                }
            }
            validate_step_fields(step)
                .map_err(|reason| invalid(format!("step {index} ({}): {reason}", step.kind())))?;
        }

        check_count(
            self.execution.health_checks.len(),
            MAX_HEALTH_CHECKS,
            "health checks",
        )
        .map_err(invalid)?;
        for (index, step) in self.steps.iter().enumerate() {
            if step.runs_command() && !self.execution.runs_commands {
                return Err(invalid(format!(
                    "step {index} runs a command, but the manifest does not declare runs_commands"
                )));
            }
        }
        for (index, check) in self.execution.health_checks.iter().enumerate() {
            match check {
                HealthCheck::UnitActive { unit } if unit.is_empty() => {
                    return Err(invalid(format!("health check {index} names no unit")));
                }
                HealthCheck::TcpListening { port: 0 } => {
                    return Err(invalid(format!("health check {index} names port 0")));
                }
                HealthCheck::CommandSucceeds { argv } => {
                    if argv.is_empty() {
                        return Err(invalid(format!(
                            "health check {index} has an empty command"
                        )));
                    }
                    check_count(argv.len(), MAX_COMMAND_ARGS, "command arguments")
                        .map_err(invalid)?;
                    if !self.execution.runs_commands {
                        return Err(invalid(format!(
                            "health check {index} runs a command, but the manifest does not \
                             declare runs_commands"
                        )));
                    }
                }
                _ => {}
            }
        }

        for (list, entries) in [
            ("tiers", &self.target.tiers),
            ("os", &self.target.os),
            ("tags", &self.target.tags),
        ] {
            check_count(entries.len(), MAX_TARGET_ENTRIES, list).map_err(invalid)?;
            for entry in entries {
                let valid = if list == "tiers" {
                    validate_name("tier", entry).map_err(|e| e.to_string())
                } else {
                    validate_target_value(entry)
                };
                valid.map_err(|reason| invalid(format!("target {list}: {reason}")))?;
            }
        }
        Ok(())
    }

    /// Validates the manifest and returns its canonical encoding, the bytes that are signed.
    pub fn encode(&self) -> Result<Vec<u8>, BundleError> {
        self.validate()?;
        let bytes = codec::encode_document("bundle manifest", self)?;
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(FormatError::TooLarge {
                what: "manifest",
                actual: bytes.len() as u64,
                max: MAX_MANIFEST_BYTES as u64,
            }
            .into());
        }
        Ok(bytes)
    }

    /// Decodes manifest bytes, which must be canonical, and validates the manifest.
    pub fn decode(bytes: &[u8]) -> Result<Self, BundleError> {
        let manifest: Self = codec::decode_document("bundle file", "manifest", bytes)?;
        manifest.validate()?;
        Ok(manifest)
    }
}

/// Maximum length of a user or group name, as in shadow-utils' default `LOGIN_NAME_MAX` of 32.
pub const MAX_USER_NAME_LEN: usize = 32;

/// Maximum length in bytes of a path a step names.
pub const MAX_STEP_PATH_LEN: usize = 1024;

/// Checks the fields of one step that name things on the host: paths, accounts, packages, units
/// and kernel parameters. The agent trusts these checks to keep every step below its root
/// directory and every argument it passes to a program from being read as an option.
fn validate_step_fields(step: &Step) -> Result<(), String> {
    match step {
        Step::WriteFile {
            path,
            mode,
            owner,
            group,
            ..
        } => {
            validate_step_path(path)?;
            if *mode > 0o7777 {
                return Err(format!(
                    "mode {mode:o} has bits beyond the permission bits 7777"
                ));
            }
            validate_owner("owner", owner)?;
            validate_owner("group", group)
        }
        Step::EnsureConfigLine {
            path,
            match_prefix,
            line,
        } => {
            validate_step_path(path)?;
            if match_prefix.is_empty() {
                return Err("match_prefix is empty".into());
            }
            if !line.starts_with(match_prefix.as_str()) {
                return Err(format!(
                    "line {line:?} does not start with match_prefix {match_prefix:?}, so a \
                     second run would append it again"
                ));
            }
            for (field, value) in [("match_prefix", match_prefix), ("line", line)] {
                if value.contains(['\n', '\r', '\0']) {
                    return Err(format!("{field} {value:?} contains a line break or NUL"));
                }
            }
            Ok(())
        }
        Step::InstallDeb {
            package, version, ..
        }
        | Step::UpgradeDeb {
            package, version, ..
        } => {
            validate_package_name(package)?;
            validate_package_version(version)
        }
        Step::RemoveDeb { package } => validate_package_name(package),
        Step::Sysctl { key, value } => {
            validate_sysctl_key(key)?;
            if value.is_empty() || value.contains(['\n', '\r', '\0']) || value.len() > 256 {
                return Err(format!(
                    "sysctl value {value:?} must be 1 to 256 bytes without line breaks"
                ));
            }
            Ok(())
        }
        Step::SystemdUnit { unit, .. } => validate_unit_name(unit),
        Step::LockAccount { user }
        | Step::UnlockAccount { user }
        | Step::ExpireAccount { user }
        | Step::RemoveAccount { user } => validate_user_name("user", user),
        Step::RemoveAuthorizedKey {
            user,
            key_fingerprint,
        } => {
            validate_user_name("user", user)?;
            validate_key_fingerprint(key_fingerprint)
        }
        Step::RunCommand { .. } => Ok(()),
    }
}

/// Accepts a relative path of normal components: no leading `/`, no `.` or `..`, no empty
/// component and no NUL. A step resolves it below the agent's root directory.
pub fn validate_step_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > MAX_STEP_PATH_LEN {
        return Err(format!(
            "path {path:?} must be 1 to {MAX_STEP_PATH_LEN} bytes long"
        ));
    }
    if path.starts_with('/') {
        return Err(format!(
            "path {path:?} is absolute; write it relative to the root, such as \"etc/motd\""
        ));
    }
    if path.contains('\0') {
        return Err(format!("path {path:?} contains NUL"));
    }
    for component in path.split('/') {
        if component.is_empty() || component == "." || component == ".." {
            return Err(format!(
                "path {path:?} has an empty, \".\" or \"..\" component"
            ));
        }
    }
    Ok(())
}

/// Accepts a user or group name as shadow-utils does by default: a lowercase letter or `_`, then
/// lowercase letters, digits, `_` or `-`, optionally ending in `$`, at most 32 bytes.
pub fn validate_user_name(field: &str, name: &str) -> Result<(), String> {
    let body = name.strip_suffix('$').unwrap_or(name);
    let valid_start = body
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let valid_rest = body
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid_start || !valid_rest || name.len() > MAX_USER_NAME_LEN {
        return Err(format!(
            "{field} {name:?} is not a valid account name: a lowercase letter or '_', then \
             lowercase letters, digits, '_' or '-', at most {MAX_USER_NAME_LEN} bytes"
        ));
    }
    Ok(())
}

/// Accepts an account name or a decimal id, for the owner and group of a file.
fn validate_owner(field: &str, value: &str) -> Result<(), String> {
    if !value.is_empty() && value.len() <= 10 && value.chars().all(|c| c.is_ascii_digit()) {
        return value
            .parse::<u32>()
            .map(|_| ())
            .map_err(|_| format!("{field} id {value} is larger than 4294967295"));
    }
    validate_user_name(field, value)
}

/// Accepts a Debian package name: lowercase letters, digits and `+-.`, at least two characters,
/// starting with a letter or digit (Debian Policy 5.6.1).
fn validate_package_name(name: &str) -> Result<(), String> {
    let valid = name.len() >= 2
        && name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if !valid {
        return Err(format!(
            "package name {name:?} is not valid: 2 to 128 characters of lowercase letters, \
             digits and '+-.', starting with a letter or digit"
        ));
    }
    Ok(())
}

/// Accepts a Debian version: letters, digits and `.+~-:` as Debian Policy 5.6.12 allows, starting
/// with a digit.
fn validate_package_version(version: &str) -> Result<(), String> {
    let valid = version.len() <= 128
        && version.chars().next().is_some_and(|c| c.is_ascii_digit())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~-:".contains(c));
    if !valid {
        return Err(format!(
            "package version {version:?} is not valid: letters, digits and '.+~-:', starting \
             with a digit"
        ));
    }
    Ok(())
}

/// Accepts a kernel parameter name such as `net.ipv4.ip_forward`: dot- or slash-separated
/// components of letters, digits, `_` and `-`, with no component `..`.
fn validate_sysctl_key(key: &str) -> Result<(), String> {
    let valid = !key.is_empty()
        && key.len() <= 256
        && key.split(['.', '/']).all(|component| {
            !component.is_empty()
                && component
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if !valid {
        return Err(format!(
            "sysctl key {key:?} is not valid: components of letters, digits, '_' and '-' \
             separated by '.'"
        ));
    }
    Ok(())
}

/// Accepts a systemd unit name such as `telnet.socket` or `getty@tty1.service`: a name, a dot and
/// a unit type, without `/` and not starting with `-`.
fn validate_unit_name(unit: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c);
    let valid = !unit.is_empty()
        && unit.len() <= 255
        && !unit.starts_with(['-', '.'])
        && unit.chars().all(allowed)
        && unit.rsplit_once('.').is_some_and(|(name, suffix)| {
            !name.is_empty()
                && [
                    "service",
                    "socket",
                    "timer",
                    "target",
                    "path",
                    "mount",
                    "automount",
                    "swap",
                    "device",
                    "slice",
                    "scope",
                ]
                .contains(&suffix)
        });
    if !valid {
        return Err(format!(
            "unit name {unit:?} is not valid: a name of letters, digits and ':-_.\\@' followed by \
             a unit type such as .service or .socket"
        ));
    }
    Ok(())
}

/// Accepts an SSH key fingerprint as `ssh-keygen -l -E sha256` prints it: `SHA256:` and 43
/// characters of unpadded standard base64.
fn validate_key_fingerprint(fingerprint: &str) -> Result<(), String> {
    let valid = fingerprint.strip_prefix("SHA256:").is_some_and(|digest| {
        digest.len() == 43
            && digest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
    });
    if !valid {
        return Err(format!(
            "key fingerprint {fingerprint:?} is not valid: expected \"SHA256:\" and 43 \
             characters of base64, as `ssh-keygen -l` prints it"
        ));
    }
    Ok(())
}

fn check_count(count: usize, max: usize, items: &str) -> Result<(), String> {
    if count > max {
        return Err(format!(
            "it has {count} {items}, more than the limit of {max}"
        ));
    }
    Ok(())
}

fn validate_payload_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._+~-".contains(c);
    if name.is_empty() || name.len() > MAX_PAYLOAD_NAME_LEN {
        return Err(format!(
            "payload name {name:?} must be 1 to {MAX_PAYLOAD_NAME_LEN} bytes long"
        ));
    }
    if name.starts_with('.') || !name.chars().all(allowed) {
        return Err(format!(
            "payload name {name:?} may contain only letters, digits and '._+~-', and must not \
             start with '.'"
        ));
    }
    Ok(())
}

fn validate_target_value(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > MAX_TARGET_VALUE_LEN {
        return Err(format!(
            "{value:?} must be 1 to {MAX_TARGET_VALUE_LEN} bytes long"
        ));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{value:?} must not contain spaces or control characters"
        ));
    }
    Ok(())
}

fn deserialize_steps<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Step>, D::Error> {
    codec::deserialize_bounded_vec(deserializer, MAX_STEPS)
}

fn deserialize_health_checks<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<HealthCheck>, D::Error> {
    codec::deserialize_bounded_vec(deserializer, MAX_HEALTH_CHECKS)
}

fn deserialize_payload_refs<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<PayloadRef>, D::Error> {
    codec::deserialize_bounded_vec(deserializer, MAX_PAYLOADS)
}

fn deserialize_target_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    codec::deserialize_bounded_vec(deserializer, MAX_TARGET_ENTRIES)
}

fn deserialize_command<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    codec::deserialize_bounded_vec(deserializer, MAX_COMMAND_ARGS)
}

fn deserialize_optional_command<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    /// A command with the decoding bound of [`MAX_COMMAND_ARGS`], for use inside `Option`.
    struct Command(Vec<String>);

    impl<'de> Deserialize<'de> for Command {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserialize_command(deserializer).map(Command)
        }
    }

    Ok(Option::<Command>::deserialize(deserializer)?.map(|command| command.0))
}

/// One payload file inside a bundle file. `Debug` shows the name and size, not the content.
#[derive(Clone, PartialEq, Eq)]
pub struct Payload {
    pub name: String,
    pub content: Vec<u8>,
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload")
            .field("name", &self.name)
            .field("size", &self.content.len())
            .finish()
    }
}

/// A bundle file, decoded but not verified.
///
/// The fields are public so that tools can inspect and rearrange a file. Verification reads them
/// again, so a changed field can make it fail but never pass wrongly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    /// The canonical postcard encoding of the [`BundleManifest`]; these are the bytes that are
    /// signed and hashed.
    pub manifest_bytes: Vec<u8>,
    pub payloads: Vec<Payload>,
    pub signatures: Vec<Signature>,
}

impl BundleFile {
    /// Builds an unsigned bundle file. The payloads must match the manifest's payload list
    /// exactly: every listed payload present with its size and hash, nothing else.
    pub fn new(manifest: &BundleManifest, payloads: Vec<Payload>) -> Result<Self, BundleError> {
        let manifest_bytes = manifest.encode()?;
        check_payloads(&manifest.payloads, &payloads)?;
        Ok(Self {
            manifest_bytes,
            payloads,
            signatures: Vec::new(),
        })
    }

    /// Decodes and validates the manifest. Nothing about the signatures is checked.
    pub fn manifest(&self) -> Result<BundleManifest, BundleError> {
        BundleManifest::decode(&self.manifest_bytes)
    }

    pub fn bundle_hash(&self) -> BundleHash {
        BundleHash::of_manifest(&self.manifest_bytes)
    }

    /// Adds `key`'s signature over the manifest. Only security keys sign bundles.
    pub fn sign(&mut self, key: &SigningKey) -> Result<SignOutcome, BundleError> {
        if key.role() != Role::Security {
            return Err(BundleError::NotSecurityKey {
                key_id: key.key_id(),
                role: key.role(),
            });
        }
        let signature = key.sign(SigningContext::BundleManifest, &self.manifest_bytes);
        add_signature(&mut self.signatures, signature, BUNDLE_FRAMING.what).map_err(Into::into)
    }

    /// Returns the key ids of the signatures, in file order, for display. Nothing is verified.
    pub fn signers(&self) -> Vec<KeyId> {
        self.signatures.iter().map(|s| s.key_id).collect()
    }

    /// Writes the bundle file format described in this module's documentation, checking the
    /// same limits as [`BundleFile::decode`].
    pub fn encode(&self) -> Result<Vec<u8>, BundleError> {
        let too_many = |items, count: usize, max: usize| FormatError::TooMany {
            what: BUNDLE_FRAMING.what,
            items,
            count: count as u64,
            max: max as u64,
        };
        if self.manifest_bytes.len() > MAX_MANIFEST_BYTES {
            return Err(FormatError::TooLarge {
                what: "manifest",
                actual: self.manifest_bytes.len() as u64,
                max: MAX_MANIFEST_BYTES as u64,
            }
            .into());
        }
        if self.payloads.len() > MAX_PAYLOADS {
            return Err(too_many("payloads", self.payloads.len(), MAX_PAYLOADS).into());
        }
        if self.signatures.len() > MAX_SIGNATURES {
            return Err(too_many("signatures", self.signatures.len(), MAX_SIGNATURES).into());
        }
        let content_bytes: usize = self.payloads.iter().map(|p| p.content.len()).sum();
        if content_bytes > MAX_BUNDLE_FILE_BYTES {
            return Err(FormatError::TooLarge {
                what: BUNDLE_FRAMING.what,
                actual: content_bytes as u64,
                max: MAX_BUNDLE_FILE_BYTES as u64,
            }
            .into());
        }
        for payload in &self.payloads {
            if payload.name.len() > MAX_PAYLOAD_NAME_LEN {
                return Err(FormatError::TooLarge {
                    what: "payload name",
                    actual: payload.name.len() as u64,
                    max: MAX_PAYLOAD_NAME_LEN as u64,
                }
                .into());
            }
        }

        let mut out = BUNDLE_FRAMING.start();
        codec::write_bytes(&mut out, &self.manifest_bytes);
        codec::write_value(&mut out, &(self.payloads.len() as u64));
        for payload in &self.payloads {
            codec::write_bytes(&mut out, payload.name.as_bytes());
            codec::write_bytes(&mut out, &payload.content);
        }
        codec::write_value(&mut out, &(self.signatures.len() as u64));
        for signature in &self.signatures {
            codec::write_value(&mut out, signature);
        }
        BUNDLE_FRAMING.check_size(&out)?;
        Ok(out)
    }

    /// Reads a bundle file, checking its magic, format byte and size limits. The manifest is
    /// not decoded and nothing is verified.
    pub fn decode(input: &[u8]) -> Result<Self, BundleError> {
        let mut reader = BUNDLE_FRAMING.open(input)?;
        let manifest_bytes = reader.bytes("manifest", MAX_MANIFEST_BYTES)?.to_vec();

        let payload_count = reader.count("payload count", "payloads", MAX_PAYLOADS)?;
        let mut payloads = Vec::with_capacity(payload_count);
        for _ in 0..payload_count {
            let name = reader.string("payload name", MAX_PAYLOAD_NAME_LEN)?;
            let content = reader.bytes("payload", MAX_BUNDLE_FILE_BYTES)?.to_vec();
            payloads.push(Payload { name, content });
        }

        let signature_count = reader.count("signature count", "signatures", MAX_SIGNATURES)?;
        let mut signatures = Vec::with_capacity(signature_count);
        for _ in 0..signature_count {
            signatures.push(reader.value::<Signature>("signature")?);
        }
        reader.finish("signatures")?;

        Ok(Self {
            manifest_bytes,
            payloads,
            signatures,
        })
    }
}

/// Checks a bundle's payload files against the manifest's list: every listed payload is present
/// once with its size and SHA-256, and no other file is present. Listed payloads are checked in
/// manifest order, then unlisted files in file order.
pub(crate) fn check_payloads(refs: &[PayloadRef], payloads: &[Payload]) -> Result<(), BundleError> {
    for reference in refs {
        let mut matching = payloads.iter().filter(|p| p.name == reference.name);
        let Some(payload) = matching.next() else {
            return Err(BundleError::PayloadMissing {
                name: reference.name.clone(),
            });
        };
        if matching.next().is_some() {
            return Err(BundleError::PayloadDuplicate {
                name: reference.name.clone(),
            });
        }
        let actual_size = payload.content.len() as u64;
        if actual_size != reference.size {
            return Err(BundleError::PayloadSize {
                name: reference.name.clone(),
                expected: reference.size,
                actual: actual_size,
            });
        }
        let actual_hash = sha256(&payload.content);
        if actual_hash != reference.sha256 {
            return Err(BundleError::PayloadHash {
                name: reference.name.clone(),
                expected: to_hex(&reference.sha256),
                actual: to_hex(&actual_hash),
            });
        }
    }
    if let Some(extra) = payloads
        .iter()
        .find(|p| !refs.iter().any(|r| r.name == p.name))
    {
        return Err(BundleError::PayloadUnlisted {
            name: extra.name.clone(),
        });
    }
    Ok(())
}

/// A bundle file decoded for a person to read. Nothing in it has been verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleInspection {
    pub manifest: BundleManifest,
    pub bundle_hash: BundleHash,
    /// The payload files as found in the file, in file order.
    pub payloads: Vec<PayloadSummary>,
    /// The key ids of the signatures, in file order.
    pub signers: Vec<KeyId>,
}

/// A payload file's name, size and SHA-256 as found in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadSummary {
    pub name: String,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// Decodes a bundle file and its manifest for `bundle inspect`, without verifying anything.
pub fn inspect_bundle(file_bytes: &[u8]) -> Result<BundleInspection, BundleError> {
    let file = BundleFile::decode(file_bytes)?;
    let manifest = file.manifest()?;
    Ok(BundleInspection {
        manifest,
        bundle_hash: file.bundle_hash(),
        payloads: file
            .payloads
            .iter()
            .map(|p| PayloadSummary {
                name: p.name.clone(),
                size: p.content.len() as u64,
                sha256: sha256(&p.content),
            })
            .collect(),
        signers: file.signers(),
    })
}

/// A failure to build, encode, decode or sign a bundle file, or a payload that does not match the
/// manifest. [`BundleError::rule`] gives the verification rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("invalid manifest of bundle {bundle_id}: {reason}")]
    InvalidManifest { bundle_id: String, reason: String },
    #[error("key {key_id} has role {role}; only a security key can sign a bundle")]
    NotSecurityKey { key_id: KeyId, role: Role },
    #[error("payload {name:?} is listed in the manifest but missing from the file")]
    PayloadMissing { name: String },
    #[error("payload {name:?} appears more than once in the file")]
    PayloadDuplicate { name: String },
    #[error("payload {name:?} is in the file but not listed in the manifest")]
    PayloadUnlisted { name: String },
    #[error("payload {name:?} is {actual} bytes, but the manifest lists {expected} bytes")]
    PayloadSize {
        name: String,
        expected: u64,
        actual: u64,
    },
    #[error("payload {name:?} has SHA-256 {actual}, but the manifest lists {expected}")]
    PayloadHash {
        name: String,
        expected: String,
        actual: String,
    },
}

impl BundleError {
    /// Returns the verification rule this error breaks, for a rejection verdict.
    pub fn rule(&self) -> RejectRule {
        match self {
            Self::Format(error) if error.is_size_limit() => RejectRule::SizeLimit,
            Self::Format(_) => RejectRule::Format,
            Self::InvalidManifest { .. } => RejectRule::InvalidManifest,
            // Signing with the wrong key never happens during verification; the closest rule is
            // the one verification applies to such a signature.
            Self::NotSecurityKey { .. } => RejectRule::WrongRole,
            Self::PayloadMissing { .. } => RejectRule::PayloadMissing,
            Self::PayloadDuplicate { .. } | Self::PayloadUnlisted { .. } => {
                RejectRule::PayloadExtra
            }
            Self::PayloadSize { .. } => RejectRule::PayloadSize,
            Self::PayloadHash { .. } => RejectRule::PayloadHash,
        }
    }
}
