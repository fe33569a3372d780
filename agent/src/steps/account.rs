//! The account steps: lock, unlock and expire a local account, remove one authorized SSH key, and
//! remove an account. They edit the account databases below the root (`etc/passwd`,
//! `etc/shadow`, `etc/group`, `etc/gshadow`) and `~/.ssh/authorized_keys` directly, each file
//! replaced atomically with its mode and owner kept, and never call `usermod` or `passwd`, which
//! would need PAM and a chroot.
//!
//! - lock puts `!` in front of the password hash, as `usermod -L` does. Unlock removes it, and
//!   fails rather than leave an account with an empty password, as `passwd -u` does.
//! - expire sets the expiry field of `etc/shadow` to day 1 (2 January 1970), as
//!   `usermod --expiredate 1` does, since day 0 means "never" to some readers;
//! - the prior state of these keeps the account's exact `etc/shadow` line, and revert puts that
//!   line back, leaving the other lines as they are then.
//!
//! Removing an account deletes its lines from the four databases, its name from the member lists
//! of groups, and its own group when that is its primary group and has no other members, as
//! `userdel` does. It keeps the home directory and the files the account owns. It cannot be
//! reverted. A crash between two of the four files leaves the account in some and not in others;
//! running the step again finishes it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tidegate_protocol::trust::Step;

use super::rootfs::{self, FilePrior};
use super::{PlannedChange, StepContext, StepError};

const PASSWD: &str = "etc/passwd";
const SHADOW: &str = "etc/shadow";
const GROUP: &str = "etc/group";
const GSHADOW: &str = "etc/gshadow";

/// The shadow expiry day that [`Step::ExpireAccount`] sets: 2 January 1970.
const EXPIRED_DAY: &str = "1";

/// An account as a lock, unlock or expire step found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountPrior {
    pub user: String,
    /// The account's whole line of `etc/shadow`, without the line break.
    pub shadow_line: String,
}

/// An account's lines before [`Step::RemoveAccount`], kept for a person since nothing reverts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRemovalPrior {
    pub user: String,
    /// `None` when the account was already gone.
    pub passwd_line: Option<String>,
    pub shadow_line: Option<String>,
}

fn user_of(step: &Step) -> &str {
    match step {
        Step::LockAccount { user }
        | Step::UnlockAccount { user }
        | Step::ExpireAccount { user }
        | Step::RemoveAccount { user }
        | Step::RemoveAuthorizedKey { user, .. } => user,
        _ => "",
    }
}

/// A text database below the root, with its metadata for writing it back.
struct Database {
    relative: &'static str,
    path: PathBuf,
    snapshot: rootfs::FileSnapshot,
    text: String,
}

fn read_database(
    kind: &'static str,
    cx: &StepContext<'_>,
    relative: &'static str,
) -> Result<Option<Database>, StepError> {
    let path = rootfs::resolve(kind, cx.root, relative)?;
    let Some((snapshot, content)) = rootfs::read_file(kind, &path)? else {
        return Ok(None);
    };
    let text = String::from_utf8(content).map_err(|_| StepError::Malformed {
        kind,
        path: path.clone(),
        reason: "it is not UTF-8 text".into(),
    })?;
    Ok(Some(Database {
        relative,
        path,
        snapshot,
        text,
    }))
}

fn require_database(
    kind: &'static str,
    cx: &StepContext<'_>,
    relative: &'static str,
) -> Result<Database, StepError> {
    read_database(kind, cx, relative)?.ok_or_else(|| StepError::Io {
        kind,
        operation: "read",
        path: cx.root.join(relative),
        source: std::io::ErrorKind::NotFound.into(),
    })
}

impl Database {
    fn line_of(&self, user: &str) -> Option<&str> {
        self.text
            .lines()
            .find(|line| line.split(':').next() == Some(user))
    }

    fn require_line(&self, kind: &'static str, user: &str) -> Result<&str, StepError> {
        self.line_of(user).ok_or_else(|| StepError::NotFound {
            kind,
            what: "user",
            name: user.to_owned(),
            path: self.path.clone(),
        })
    }

    /// Returns the text with the user's line replaced by `new`, or removed when `new` is `None`.
    fn with_line(&self, user: &str, new: Option<&str>) -> String {
        let mut out = String::with_capacity(self.text.len());
        for line in self.text.split_inclusive('\n') {
            if line.split(':').next() == Some(user) {
                if let Some(new) = new {
                    out.push_str(new);
                    out.push('\n');
                }
            } else {
                out.push_str(line);
            }
        }
        out
    }

    fn write(
        &self,
        kind: &'static str,
        text: &str,
        checkpoint: &dyn Fn(),
    ) -> Result<(), StepError> {
        if text == self.text {
            return rootfs::remove_stale_temp(kind, &self.path);
        }
        rootfs::replace_file(
            kind,
            &self.path,
            text.as_bytes(),
            self.snapshot.mode,
            self.snapshot.uid,
            self.snapshot.gid,
            checkpoint,
        )
    }
}

fn malformed_shadow(kind: &'static str, db: &Database, user: &str) -> StepError {
    StepError::Malformed {
        kind,
        path: db.path.clone(),
        reason: format!("the line of {user:?} does not have the 9 fields of shadow(5)"),
    }
}

/// Returns the account's shadow line as the step leaves it.
fn changed_line(step: &Step, line: &str, db: &Database) -> Result<String, StepError> {
    let kind = step.kind();
    let user = user_of(step);
    let mut fields: Vec<&str> = line.split(':').collect();
    if fields.len() != 9 {
        return Err(malformed_shadow(kind, db, user));
    }
    let password;
    match step {
        Step::LockAccount { .. } => {
            if !fields[1].starts_with('!') {
                password = format!("!{}", fields[1]);
                fields[1] = &password;
            }
        }
        Step::UnlockAccount { .. } => {
            let unlocked = fields[1].trim_start_matches('!');
            if unlocked.is_empty() {
                return Err(StepError::Invalid {
                    kind,
                    reason: format!(
                        "unlocking {user:?} would leave it with an empty password; set a \
                         password first"
                    ),
                });
            }
            fields[1] = unlocked;
        }
        Step::ExpireAccount { .. } => fields[7] = EXPIRED_DAY,
        _ => return Err(super::wrong_step(kind, step)),
    }
    Ok(fields.join(":"))
}

/// Checks that `user` is in `etc/passwd`, so a typo is reported as an unknown account.
fn require_passwd_entry(
    kind: &'static str,
    cx: &StepContext<'_>,
    user: &str,
) -> Result<String, StepError> {
    let passwd = require_database(kind, cx, PASSWD)?;
    passwd.require_line(kind, user).map(str::to_owned)
}

pub(super) fn probe(step: &Step, cx: &StepContext<'_>) -> Result<AccountPrior, StepError> {
    let kind = step.kind();
    let user = user_of(step);
    require_passwd_entry(kind, cx, user)?;
    let shadow = require_database(kind, cx, SHADOW)?;
    let line = shadow.require_line(kind, user)?.to_owned();
    changed_line(step, &line, &shadow)?;
    Ok(AccountPrior {
        user: user.to_owned(),
        shadow_line: line,
    })
}

pub(super) fn plan(step: &Step, prior: &AccountPrior) -> Result<PlannedChange, StepError> {
    let verb = match step {
        Step::LockAccount { .. } => "lock",
        Step::UnlockAccount { .. } => "unlock",
        Step::ExpireAccount { .. } => "expire",
        _ => return Err(super::wrong_step(step.kind(), step)),
    };
    let fields: Vec<&str> = prior.shadow_line.split(':').collect();
    let changes = match step {
        Step::LockAccount { .. } => !fields.get(1).is_some_and(|p| p.starts_with('!')),
        Step::UnlockAccount { .. } => fields.get(1).is_some_and(|p| p.starts_with('!')),
        _ => fields.get(7) != Some(&EXPIRED_DAY),
    };
    Ok(PlannedChange {
        summary: format!("{verb} account {}", prior.user),
        detail: String::new(),
        changes,
    })
}

pub(super) fn apply(step: &Step, cx: &StepContext<'_>) -> Result<(), StepError> {
    let kind = step.kind();
    let user = user_of(step);
    let shadow = require_database(kind, cx, SHADOW)?;
    let line = shadow.require_line(kind, user)?;
    let new_line = changed_line(step, line, &shadow)?;
    let text = shadow.with_line(user, Some(&new_line));
    shadow.write(kind, &text, &|| (cx.checkpoint)("apply-mid"))
}

pub(super) fn verify(step: &Step, cx: &StepContext<'_>) -> Result<(), StepError> {
    let kind = step.kind();
    let user = user_of(step);
    let shadow = require_database(kind, cx, SHADOW)?;
    let line = shadow.require_line(kind, user)?;
    let fields: Vec<&str> = line.split(':').collect();
    if fields.len() != 9 {
        return Err(malformed_shadow(kind, &shadow, user));
    }
    let (ok, expected, actual) = match step {
        Step::LockAccount { .. } => (
            fields[1].starts_with('!'),
            "a password field starting with '!'",
            "an unlocked password field",
        ),
        Step::UnlockAccount { .. } => (
            !fields[1].starts_with('!'),
            "a password field not starting with '!'",
            "a locked password field",
        ),
        _ => (
            fields[7] == EXPIRED_DAY,
            "expiry day 1",
            "another expiry day",
        ),
    };
    if !ok {
        return Err(StepError::Verify {
            kind,
            target: format!("{} of {user}", shadow.relative),
            expected: expected.to_owned(),
            actual: actual.to_owned(),
        });
    }
    Ok(())
}

pub(super) fn revert(
    step: &Step,
    cx: &StepContext<'_>,
    prior: &AccountPrior,
) -> Result<(), StepError> {
    let kind = step.kind();
    let shadow = require_database(kind, cx, SHADOW)?;
    shadow.require_line(kind, &prior.user)?;
    let text = shadow.with_line(&prior.user, Some(&prior.shadow_line));
    shadow.write(kind, &text, &|| (cx.checkpoint)("revert-mid"))
}

/// Resolves `~USER/.ssh/authorized_keys` below the root from the home directory in `etc/passwd`.
fn authorized_keys_path(
    kind: &'static str,
    cx: &StepContext<'_>,
    user: &str,
) -> Result<(String, PathBuf), StepError> {
    let line = require_passwd_entry(kind, cx, user)?;
    let home = line.split(':').nth(5).ok_or_else(|| StepError::Malformed {
        kind,
        path: cx.root.join(PASSWD),
        reason: format!("the line of {user:?} has no home directory field"),
    })?;
    let absolute = format!("{}/.ssh/authorized_keys", home.trim_end_matches('/'));
    let path = rootfs::resolve_absolute(kind, cx.root, &absolute)?;
    Ok((absolute.trim_start_matches('/').to_owned(), path))
}

fn fingerprint_of(step: &Step) -> &str {
    match step {
        Step::RemoveAuthorizedKey {
            key_fingerprint, ..
        } => key_fingerprint,
        _ => "",
    }
}

/// Returns the `SHA256:` fingerprint of an `authorized_keys` line, or `None` for comments, blank
/// lines and lines without a key.
///
/// A line is `[options] keytype base64 [comment]`. Options may contain quoted spaces, so the key
/// is found as the first token that names a key type and is followed by valid base64.
pub(crate) fn line_fingerprint(line: &str) -> Option<String> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    let tokens = split_unquoted(trimmed);
    tokens.windows(2).find_map(|pair| {
        let key_type = pair[0];
        let is_key_type = key_type.starts_with("ssh-")
            || key_type.starts_with("ecdsa-sha2-")
            || key_type.starts_with("sk-");
        if !is_key_type {
            return None;
        }
        let blob = base64_decode(pair[1])?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &blob);
        Some(format!(
            "SHA256:{}",
            base64_encode_unpadded(digest.as_ref())
        ))
    })
}

/// Splits at spaces and tabs outside double quotes.
fn split_unquoted(line: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let mut start = None;
    let mut quoted = false;
    for (index, c) in line.char_indices() {
        match c {
            '"' => {
                quoted = !quoted;
                start.get_or_insert(index);
            }
            ' ' | '\t' if !quoted => {
                if let Some(s) = start.take() {
                    tokens.push(&line[s..index]);
                }
            }
            _ => {
                start.get_or_insert(index);
            }
        }
    }
    if let Some(s) = start {
        tokens.push(&line[s..]);
    }
    tokens
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode_unpadded(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Decodes standard base64 with optional `=` padding, or returns `None` for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    if text.is_empty() || text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let value = BASE64.iter().position(|&b| b == c)? as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn without_key(text: &str, fingerprint: &str) -> String {
    text.split_inclusive('\n')
        .filter(|line| line_fingerprint(line).as_deref() != Some(fingerprint))
        .collect()
}

pub(super) fn probe_keys(step: &Step, cx: &StepContext<'_>) -> Result<FilePrior, StepError> {
    let (relative, _) = authorized_keys_path(step.kind(), cx, user_of(step))?;
    rootfs::probe_file(step.kind(), cx, &relative)
}

pub(super) fn plan_keys(
    step: &Step,
    cx: &StepContext<'_>,
    prior: &FilePrior,
) -> Result<PlannedChange, StepError> {
    let kind = step.kind();
    let user = user_of(step);
    let fingerprint = fingerprint_of(step);
    let (_, path) = authorized_keys_path(kind, cx, user)?;
    let text = match prior.previous {
        Some(_) => read_text(kind, &path)?,
        None => String::new(),
    };
    let new = without_key(&text, fingerprint);
    Ok(PlannedChange {
        summary: format!("remove the authorized SSH key {fingerprint} of {user}"),
        detail: rootfs::unified_diff(
            &format!("a/{}", prior.path),
            &format!("b/{}", prior.path),
            &text,
            &new,
        ),
        changes: new != text,
    })
}

fn read_text(kind: &'static str, path: &std::path::Path) -> Result<String, StepError> {
    let content = rootfs::read_file(kind, path)?
        .map(|(_, content)| content)
        .unwrap_or_default();
    String::from_utf8(content).map_err(|_| StepError::Malformed {
        kind,
        path: path.to_path_buf(),
        reason: "it is not UTF-8 text".into(),
    })
}

pub(super) fn apply_keys(step: &Step, cx: &StepContext<'_>) -> Result<(), StepError> {
    let kind = step.kind();
    let (_, path) = authorized_keys_path(kind, cx, user_of(step))?;
    let Some((snapshot, _)) = rootfs::read_file(kind, &path)? else {
        return Ok(());
    };
    let text = read_text(kind, &path)?;
    let new = without_key(&text, fingerprint_of(step));
    if new == text {
        return rootfs::remove_stale_temp(kind, &path);
    }
    rootfs::replace_file(
        kind,
        &path,
        new.as_bytes(),
        snapshot.mode,
        snapshot.uid,
        snapshot.gid,
        &|| (cx.checkpoint)("apply-mid"),
    )
}

pub(super) fn verify_keys(step: &Step, cx: &StepContext<'_>) -> Result<(), StepError> {
    let kind = step.kind();
    let user = user_of(step);
    let fingerprint = fingerprint_of(step);
    let (_, path) = authorized_keys_path(kind, cx, user)?;
    let text = read_text(kind, &path)?;
    if text
        .lines()
        .any(|line| line_fingerprint(line).as_deref() == Some(fingerprint))
    {
        return Err(StepError::Verify {
            kind,
            target: path.display().to_string(),
            expected: format!("no key {fingerprint}"),
            actual: "the key is still there".into(),
        });
    }
    Ok(())
}

pub(super) fn revert_keys(
    step: &Step,
    cx: &StepContext<'_>,
    prior: &FilePrior,
) -> Result<(), StepError> {
    let kind = step.kind();
    let (_, path) = authorized_keys_path(kind, cx, user_of(step))?;
    rootfs::restore_file(kind, cx, &path, prior)
}

pub(super) fn probe_removal(
    step: &Step,
    cx: &StepContext<'_>,
) -> Result<AccountRemovalPrior, StepError> {
    let kind = step.kind();
    let user = user_of(step);
    let passwd = require_database(kind, cx, PASSWD)?;
    let shadow = read_database(kind, cx, SHADOW)?;
    Ok(AccountRemovalPrior {
        user: user.to_owned(),
        passwd_line: passwd.line_of(user).map(str::to_owned),
        shadow_line: shadow
            .as_ref()
            .and_then(|s| s.line_of(user))
            .map(str::to_owned),
    })
}

pub(crate) fn plan_removal(step: &Step, prior: &AccountRemovalPrior) -> PlannedChange {
    let _ = step;
    PlannedChange {
        summary: format!("remove account {} (irreversible)", prior.user),
        detail: String::new(),
        changes: prior.passwd_line.is_some() || prior.shadow_line.is_some(),
    }
}

/// Keeps copies of the four databases for a person, since the step cannot be reverted.
pub(super) fn backup_removal(
    step: &Step,
    cx: &StepContext<'_>,
    _prior: &AccountRemovalPrior,
) -> Result<(), StepError> {
    let kind = step.kind();
    for relative in [PASSWD, SHADOW, GROUP, GSHADOW] {
        if let Some(db) = read_database(kind, cx, relative)? {
            let name = relative.trim_start_matches("etc/");
            let target = cx.backup_dir.join(name);
            crate::fsutil::write_atomic(&target, db.text.as_bytes(), 0o600)
                .map_err(rootfs::io_error(kind, "write the backup", &target))?;
        }
    }
    Ok(())
}

/// Returns a group database's text with `user` removed from the member lists in
/// `member_fields` (field 4 of `etc/group`, fields 3 and 4 of `etc/gshadow`, counted from 1).
/// The group named after the user is left out too when `drop_group` returns true for its fields.
fn group_text_without(
    text: &str,
    user: &str,
    member_fields: &[usize],
    drop_group: &dyn Fn(&[&str]) -> bool,
) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let mut fields: Vec<String> = body.split(':').map(str::to_owned).collect();
        let field_refs: Vec<&str> = body.split(':').collect();
        if field_refs.first() == Some(&user) && drop_group(&field_refs) {
            continue;
        }
        for &index in member_fields {
            if let Some(field) = fields.get_mut(index) {
                let kept: Vec<&str> = field
                    .split(',')
                    .filter(|m| *m != user && !m.is_empty())
                    .collect();
                let joined = kept.join(",");
                if joined != *field && !field.is_empty() {
                    *field = joined;
                }
            }
        }
        out.push_str(&fields.join(":"));
        if line.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

pub(super) fn apply_removal(step: &Step, cx: &StepContext<'_>) -> Result<(), StepError> {
    let kind = step.kind();
    let user = user_of(step);
    let passwd = require_database(kind, cx, PASSWD)?;
    let primary_gid = passwd
        .line_of(user)
        .and_then(|line| line.split(':').nth(3))
        .map(str::to_owned);

    // The group file first, while etc/passwd still names the account's primary group.
    // Whether etc/group still has a group named after the user, which etc/gshadow then keeps.
    // It is read from the file as written, so a run resumed after a crash agrees with it.
    let mut own_group_kept = true;
    if let Some(group) = read_database(kind, cx, GROUP)? {
        let drop = |fields: &[&str]| {
            let members_empty = fields
                .get(3)
                .is_none_or(|m| m.split(',').all(|x| x.is_empty() || x == user));
            let is_primary = primary_gid
                .as_deref()
                .is_some_and(|gid| fields.get(2) == Some(&gid));
            is_primary && members_empty
        };
        let text = group_text_without(&group.text, user, &[3], &drop);
        own_group_kept = text.lines().any(|l| l.split(':').next() == Some(user));
        group.write(kind, &text, &|| (cx.checkpoint)("apply-mid"))?;
    }
    if let Some(gshadow) = read_database(kind, cx, GSHADOW)? {
        let drop = |_: &[&str]| !own_group_kept;
        let text = group_text_without(&gshadow.text, user, &[2, 3], &drop);
        gshadow.write(kind, &text, &|| {})?;
    }
    if let Some(shadow) = read_database(kind, cx, SHADOW)? {
        let text = shadow.with_line(user, None);
        shadow.write(kind, &text, &|| {})?;
    }
    let text = passwd.with_line(user, None);
    passwd.write(kind, &text, &|| {})
}

pub(super) fn verify_removal(step: &Step, cx: &StepContext<'_>) -> Result<(), StepError> {
    let kind = step.kind();
    let user = user_of(step);
    for relative in [PASSWD, SHADOW] {
        if let Some(db) = read_database(kind, cx, relative)? {
            if db.line_of(user).is_some() {
                return Err(StepError::Verify {
                    kind,
                    target: relative.to_owned(),
                    expected: format!("no line for {user}"),
                    actual: "the account is still there".into(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::testkit::{self, Harness};
    use super::super::{self as steps, StepError};
    use super::*;

    const ALICE_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN7dw1g0YAALV8Gj5cshpdrXerKW6Gx10dzIonyRrnfN alice@laptop";
    const OLD_KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILQCmmEAQ1Y5Dg+oAdLJOIn8+/PyAYEMHeTlmgJdtjfu old key";
    // As `ssh-keygen -l -f` printed them for the two public keys above.
    const ALICE_FINGERPRINT: &str = "SHA256:QxxMh2ciy7EjxNq/SK8Du7SdFq2phvXO4h6Eryya2qM";
    const OLD_FINGERPRINT: &str = "SHA256:yxfB7xHfo09MJ949wztthnzx6CWCAI3vcH03VIwNxiM";

    fn harness() -> Harness {
        let harness = Harness::new();
        testkit::write_accounts(harness.root());
        harness
    }

    fn shadow_line(harness: &Harness, user: &str) -> String {
        fs::read_to_string(harness.root().join("etc/shadow"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with(&format!("{user}:")))
            .unwrap()
            .to_owned()
    }

    #[test]
    fn fingerprints_match_ssh_keygen() {
        assert_eq!(
            line_fingerprint(ALICE_KEY).as_deref(),
            Some(ALICE_FINGERPRINT)
        );
        let with_options = format!("from=\"10.0.0.1\",command=\"echo a b\" {OLD_KEY}");
        assert_eq!(
            line_fingerprint(&with_options).as_deref(),
            Some(OLD_FINGERPRINT)
        );
        assert_eq!(line_fingerprint("# ssh-ed25519 AAAA"), None);
        assert_eq!(line_fingerprint("ssh-ed25519 not*base64"), None);
    }

    #[test]
    fn lock_account_round_trip() {
        let harness = harness();
        let step = Step::LockAccount {
            user: "alice".into(),
        };
        let prior = harness.probe_and_backup(&step);
        steps::apply(&step, &harness.cx(), &prior).unwrap();
        assert_eq!(
            shadow_line(&harness, "alice"),
            "alice:!$y$j9T$salt$hash:19800:0:99999:7:::"
        );
        steps::revert(&step, &harness.cx(), &prior).unwrap();
        harness.round_trip(&step);
    }

    #[test]
    fn unlock_account_round_trip() {
        let harness = harness();
        let step = Step::UnlockAccount { user: "bob".into() };
        let prior = harness.probe_and_backup(&step);
        steps::apply(&step, &harness.cx(), &prior).unwrap();
        assert_eq!(
            shadow_line(&harness, "bob"),
            "bob:$6$salt$hash:19000:0:99999:7:::"
        );
        steps::revert(&step, &harness.cx(), &prior).unwrap();
        harness.round_trip(&step);
    }

    #[test]
    fn expire_account_round_trip() {
        let harness = harness();
        let step = Step::ExpireAccount {
            user: "alice".into(),
        };
        let prior = harness.probe_and_backup(&step);
        steps::apply(&step, &harness.cx(), &prior).unwrap();
        assert_eq!(
            shadow_line(&harness, "alice"),
            "alice:$y$j9T$salt$hash:19800:0:99999:7::1:"
        );
        steps::revert(&step, &harness.cx(), &prior).unwrap();
        harness.round_trip(&step);
    }

    #[test]
    fn unlock_without_password_is_refused() {
        let harness = harness();
        let step = Step::UnlockAccount {
            user: "nopass".into(),
        };
        let error = steps::probe(&step, &harness.cx()).unwrap_err();
        assert!(error.to_string().contains("empty password"), "{error}");
    }

    #[test]
    fn account_step_unknown_user_is_error() {
        let harness = harness();
        let step = Step::LockAccount {
            user: "mallory".into(),
        };
        let error = steps::probe(&step, &harness.cx()).unwrap_err();
        assert!(
            matches!(error, StepError::NotFound { what: "user", .. }),
            "{error}"
        );
    }

    #[test]
    fn remove_authorized_key_round_trip() {
        let harness = harness();
        let keys = harness.root().join("home/alice/.ssh/authorized_keys");
        fs::write(&keys, format!("{ALICE_KEY}\n{OLD_KEY}\n")).unwrap();
        let step = Step::RemoveAuthorizedKey {
            user: "alice".into(),
            key_fingerprint: OLD_FINGERPRINT.into(),
        };
        let prior = harness.probe_and_backup(&step);
        steps::apply(&step, &harness.cx(), &prior).unwrap();
        assert_eq!(fs::read_to_string(&keys).unwrap(), format!("{ALICE_KEY}\n"));
        steps::revert(&step, &harness.cx(), &prior).unwrap();

        harness.round_trip(&step);
    }

    #[test]
    fn authorized_keys_symlink_outside_is_error() {
        let harness = harness();
        let ssh = harness.root().join("home/alice/.ssh");
        fs::remove_dir_all(&ssh).unwrap();
        std::os::unix::fs::symlink("/root/.ssh", &ssh).unwrap();
        let step = Step::RemoveAuthorizedKey {
            user: "alice".into(),
            key_fingerprint: OLD_FINGERPRINT.into(),
        };
        let error = steps::probe(&step, &harness.cx()).unwrap_err();
        assert!(matches!(error, StepError::OutsideRoot { .. }), "{error}");
    }

    #[test]
    fn remove_account_resumes_after_crash() {
        let harness = harness();
        let step = Step::RemoveAccount {
            user: "alice".into(),
        };
        assert!(steps::resumable(&step));
        let prior = harness.probe_and_backup(&step);
        let reached = harness.interrupt_at("apply-mid", |cx| {
            let _ = steps::apply(&step, cx, &prior);
        });
        assert!(reached);

        steps::apply(&step, &harness.cx(), &prior).unwrap();

        let read = |name: &str| fs::read_to_string(harness.root().join(name)).unwrap();
        assert_eq!(
            read("etc/gshadow"),
            "root:*::\nadm:*::\nbob:!::\nshadow:*::\n"
        );
        assert!(!read("etc/passwd").contains("alice"));
    }

    #[test]
    fn remove_account_is_irreversible() {
        let harness = harness();
        let step = Step::RemoveAccount {
            user: "alice".into(),
        };
        assert_eq!(
            steps::reversibility(&step),
            steps::Reversibility::Irreversible
        );
        let prior = harness.probe_and_backup(&step);
        steps::apply(&step, &harness.cx(), &prior).unwrap();
        steps::verify(&step, &harness.cx()).unwrap();
        // Applying again finds nothing to remove.
        steps::apply(&step, &harness.cx(), &prior).unwrap();

        let read = |name: &str| fs::read_to_string(harness.root().join(name)).unwrap();
        assert!(!read("etc/passwd").contains("alice"));
        assert!(!read("etc/shadow").contains("alice"));
        assert_eq!(
            read("etc/group"),
            "root:x:0:\nadm:x:4:\nbob:x:1001:\nshadow:x:42:\n"
        );
        assert_eq!(
            read("etc/gshadow"),
            "root:*::\nadm:*::\nbob:!::\nshadow:*::\n"
        );
        let error = steps::revert(&step, &harness.cx(), &prior).unwrap_err();
        assert!(matches!(error, StepError::Irreversible { .. }), "{error}");
    }
}
