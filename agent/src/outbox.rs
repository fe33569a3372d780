//! The durable, bounded outbox: every report the agent produces waits here until the server has
//! acknowledged storing it.
//!
//! Each message is one file `NNNNNNNNNNNNNNNNNNNN.msg` in the outbox directory, written atomically,
//! so messages survive a broker outage and an agent restart. Messages go out oldest first. A
//! broker's PUBACK only moves a message to "sent"; the file is removed when the server's
//! `ReportAck` names its `(boot_id, seq)`. Sent messages that stay unacknowledged are sent again
//! (see [`Outbox::resend_all`]); the server de-duplicates.
//!
//! When `max_messages` is reached, the oldest messages are dropped and counted; the count is
//! persisted and travels in every report. This module does no networking.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tidegate_protocol::BootId;

use crate::fsutil;

/// The first byte of every outbox file, so a future layout can be told apart.
const FILE_FORMAT: u8 = 1;
const DROPPED_FILE: &str = "dropped";

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cannot create outbox directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot list outbox directory {path}: {source}")]
    List { path: PathBuf, source: io::Error },
    #[error("cannot write outbox message {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot remove outbox message {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
}

/// One queued message: its topic and payload, and the report it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub boot_id: BootId,
    pub seq: u64,
    pub topic: String,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Entry {
    boot_id: BootId,
    seq: u64,
    sent_at: Option<Instant>,
}

pub struct Outbox {
    dir: PathBuf,
    max_messages: usize,
    entries: BTreeMap<u64, Entry>,
    next_id: u64,
    dropped: u64,
}

impl Outbox {
    /// Opens the outbox in `dir`, creating it when missing. Messages left by an earlier run are
    /// kept, all marked unsent. Files that cannot be read are removed and counted as dropped.
    pub fn open(dir: &Path, max_messages: usize) -> Result<Self, OutboxError> {
        fsutil::create_private_dir(dir).map_err(|source| OutboxError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let dropped = fs::read_to_string(dir.join(DROPPED_FILE))
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let mut outbox = Self {
            dir: dir.to_owned(),
            max_messages: max_messages.max(1),
            entries: BTreeMap::new(),
            next_id: 1,
            dropped,
        };
        let listing = fs::read_dir(dir).map_err(|source| OutboxError::List {
            path: dir.to_owned(),
            source,
        })?;
        let mut unreadable = 0u64;
        for item in listing.flatten() {
            let name = item.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                // A write that a crash interrupted before its rename: never part of the outbox.
                let _ = fs::remove_file(item.path());
                continue;
            }
            let Some(id) = name
                .strip_suffix(".msg")
                .and_then(|stem| stem.parse::<u64>().ok())
            else {
                continue;
            };
            match read_message(&item.path()) {
                Ok(message) => {
                    outbox.entries.insert(
                        id,
                        Entry {
                            boot_id: message.boot_id,
                            seq: message.seq,
                            sent_at: None,
                        },
                    );
                    outbox.next_id = outbox.next_id.max(id + 1);
                }
                Err(error) => {
                    tracing::warn!(path = %item.path().display(), %error, "removing unreadable outbox message");
                    let _ = fs::remove_file(item.path());
                    unreadable += 1;
                }
            }
        }
        if unreadable > 0 {
            outbox.dropped += unreadable;
            outbox.persist_dropped();
        }
        outbox.enforce_bound();
        Ok(outbox)
    }

    /// Appends a message, dropping the oldest messages when the bound is reached.
    pub fn push(&mut self, message: &OutboxMessage) -> Result<(), OutboxError> {
        let id = self.next_id;
        let path = self.path_of(id);
        fsutil::write_atomic(&path, &serialize(message), 0o600)
            .map_err(|source| OutboxError::Write { path, source })?;
        self.next_id += 1;
        self.entries.insert(
            id,
            Entry {
                boot_id: message.boot_id,
                seq: message.seq,
                sent_at: None,
            },
        );
        self.enforce_bound();
        Ok(())
    }

    /// Returns the oldest message not sent yet, with its id, reading it from disk. A file that
    /// has become unreadable is removed, counted as dropped, and skipped.
    pub fn next_unsent(&mut self) -> Option<(u64, OutboxMessage)> {
        loop {
            let id = self
                .entries
                .iter()
                .find(|(_, entry)| entry.sent_at.is_none())
                .map(|(id, _)| *id)?;
            let path = self.path_of(id);
            match read_message(&path) {
                Ok(message) => return Some((id, message)),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "dropping unreadable outbox message");
                    self.entries.remove(&id);
                    let _ = fs::remove_file(&path);
                    self.dropped += 1;
                    self.persist_dropped();
                }
            }
        }
    }

    /// Records that the broker acknowledged message `id`; it stays queued until the server
    /// acknowledges its report.
    pub fn mark_sent(&mut self, id: u64, at: Instant) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.sent_at = Some(at);
        }
    }

    /// Removes every message of the acknowledged reports. Returns how many were removed.
    pub fn acknowledge(&mut self, boot_id: BootId, seqs: &[u64]) -> Result<usize, OutboxError> {
        let ids: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.boot_id == boot_id && seqs.contains(&entry.seq))
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.remove(*id)?;
        }
        if !ids.is_empty() {
            let _ = fsutil::sync_dir(&self.dir);
        }
        Ok(ids.len())
    }

    /// Marks every message unsent, so all of them go out again from the oldest: after a
    /// reconnect, or when acknowledgements are overdue.
    pub fn resend_all(&mut self) {
        for entry in self.entries.values_mut() {
            entry.sent_at = None;
        }
    }

    /// The time the oldest still unacknowledged sent message was sent, if any.
    pub fn oldest_sent_at(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|entry| entry.sent_at)
            .min()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total number of messages dropped because the outbox was full or a file was unreadable.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn remove(&mut self, id: u64) -> Result<(), OutboxError> {
        self.entries.remove(&id);
        let path = self.path_of(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(OutboxError::Remove { path, source }),
        }
    }

    fn enforce_bound(&mut self) {
        let mut dropped_now = 0;
        while self.entries.len() > self.max_messages {
            let Some((&oldest, _)) = self.entries.iter().next() else {
                break;
            };
            if let Err(error) = self.remove(oldest) {
                tracing::warn!(%error, "cannot remove the oldest outbox message");
                self.entries.remove(&oldest);
            }
            dropped_now += 1;
        }
        if dropped_now > 0 {
            self.dropped += dropped_now;
            tracing::warn!(
                dropped = dropped_now,
                total_dropped = self.dropped,
                "outbox full: dropped the oldest messages"
            );
            self.persist_dropped();
        }
    }

    fn persist_dropped(&self) {
        let path = self.dir.join(DROPPED_FILE);
        if let Err(error) = fsutil::write_atomic(&path, self.dropped.to_string().as_bytes(), 0o600)
        {
            tracing::warn!(path = %path.display(), %error, "cannot persist the dropped-message count");
        }
    }

    fn path_of(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}.msg"))
    }
}

fn serialize(message: &OutboxMessage) -> Vec<u8> {
    let topic = message.topic.as_bytes();
    let mut out = Vec::with_capacity(1 + 16 + 8 + 4 + topic.len() + message.payload.len());
    out.push(FILE_FORMAT);
    out.extend_from_slice(&message.boot_id.0);
    out.extend_from_slice(&message.seq.to_le_bytes());
    out.extend_from_slice(&(topic.len() as u32).to_le_bytes());
    out.extend_from_slice(topic);
    out.extend_from_slice(&message.payload);
    out
}

fn read_message(path: &Path) -> io::Result<OutboxMessage> {
    let bytes = fs::read(path)?;
    parse(&bytes).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "truncated or unknown outbox file format",
        )
    })
}

fn parse(bytes: &[u8]) -> Option<OutboxMessage> {
    let (&format, rest) = bytes.split_first()?;
    if format != FILE_FORMAT {
        return None;
    }
    let boot_id = BootId(rest.get(..16)?.try_into().ok()?);
    let seq = u64::from_le_bytes(rest.get(16..24)?.try_into().ok()?);
    let topic_len = u32::from_le_bytes(rest.get(24..28)?.try_into().ok()?) as usize;
    let topic_end = 28usize.checked_add(topic_len)?;
    let topic = String::from_utf8(rest.get(28..topic_end)?.to_vec()).ok()?;
    let payload = rest.get(topic_end..)?.to_vec();
    Some(OutboxMessage {
        boot_id,
        seq,
        topic,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64) -> OutboxMessage {
        OutboxMessage {
            boot_id: BootId([3; 16]),
            seq,
            topic: "tidegate/v1/agent/a/report".into(),
            payload: vec![1, 2, seq as u8],
        }
    }

    fn drain_unsent(outbox: &mut Outbox) -> Vec<u64> {
        let mut seqs = vec![];
        while let Some((id, message)) = outbox.next_unsent() {
            seqs.push(message.seq);
            outbox.mark_sent(id, Instant::now());
        }
        seqs
    }

    #[test]
    fn messages_go_out_oldest_first_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        for seq in 1..=3 {
            outbox.push(&message(seq)).unwrap();
        }
        drop(outbox);

        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        assert_eq!(outbox.len(), 3);
        let (_, first) = outbox.next_unsent().unwrap();
        assert_eq!(first, message(1));
        assert_eq!(drain_unsent(&mut outbox), vec![1, 2, 3]);
    }

    #[test]
    fn sent_messages_stay_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        outbox.push(&message(1)).unwrap();
        outbox.push(&message(2)).unwrap();
        assert_eq!(drain_unsent(&mut outbox), vec![1, 2]);
        assert_eq!(outbox.len(), 2);

        assert_eq!(outbox.acknowledge(BootId([3; 16]), &[1]).unwrap(), 1);
        assert_eq!(outbox.len(), 1);
        assert_eq!(
            outbox.acknowledge(BootId([9; 16]), &[2]).unwrap(),
            0,
            "other boot id"
        );

        outbox.resend_all();
        assert_eq!(drain_unsent(&mut outbox), vec![2]);
        assert_eq!(Outbox::open(dir.path(), 10).unwrap().len(), 1);
    }

    #[test]
    fn full_outbox_drops_oldest_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), 3).unwrap();
        for seq in 1..=5 {
            outbox.push(&message(seq)).unwrap();
        }
        assert_eq!(outbox.len(), 3);
        assert_eq!(outbox.dropped(), 2);
        assert_eq!(drain_unsent(&mut outbox), vec![3, 4, 5]);
        assert_eq!(
            Outbox::open(dir.path(), 3).unwrap().dropped(),
            2,
            "count persists"
        );
    }

    #[test]
    fn unreadable_file_is_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        outbox.push(&message(1)).unwrap();
        outbox.push(&message(2)).unwrap();
        fs::write(
            dir.path().join(format!("{:020}.msg", 1)),
            [FILE_FORMAT, 0, 0],
        )
        .unwrap();
        fs::write(dir.path().join(format!("{:020}.msg.tmp", 7)), b"half").unwrap();

        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        assert_eq!(outbox.dropped(), 1);
        assert_eq!(drain_unsent(&mut outbox), vec![2]);
        assert!(!dir.path().join(format!("{:020}.msg.tmp", 7)).exists());
    }

    #[test]
    fn new_messages_after_reopen_sort_after_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        outbox.push(&message(1)).unwrap();
        drop(outbox);
        let mut outbox = Outbox::open(dir.path(), 10).unwrap();
        outbox.push(&message(2)).unwrap();
        assert_eq!(drain_unsent(&mut outbox), vec![1, 2]);
    }

    #[test]
    fn parse_never_panics_on_truncated_input() {
        let bytes = serialize(&message(7));
        for len in 0..bytes.len() {
            let _ = parse(&bytes[..len]);
        }
        assert_eq!(parse(&bytes), Some(message(7)));
    }
}
