//! Checking a copy of the audit log against its hash chain, and naming each entry that was edited,
//! deleted or moved.
//!
//! Each entry is checked against its own hash, which covers its sequence number, its content and
//! the previous entry's hash. Two further checks tell the kinds of damage apart:
//!
//! - Sequence numbers run 1, 2, 3, … with no gap, so a gap names the deleted entries.
//! - Following the `prev_hash` links from the first entry gives each intact entry the position it
//!   was written at. An entry whose hash fails at its current sequence number but matches at the
//!   position the links give it was moved (reordered), not edited.
//!
//! An entry whose own hash matches but whose `prev_hash` is not the hash of the entry before it
//! shows that the entry before it was replaced by someone who also recomputed its hash.

use std::collections::HashMap;
use std::fmt;

use super::{AuditRecord, GENESIS_HASH};

/// One thing wrong with the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Entries `first` to `last` (inclusive) are missing: deleted, or the log was renumbered.
    Missing { first: u64, last: u64 },
    /// The entry's content, sequence number or `prev_hash` does not match its hash.
    Altered { seq: u64 },
    /// The entry is intact but sits at `seq`, while the chain shows it was written as entry
    /// `written_as`.
    Moved { seq: u64, written_as: u64 },
    /// The entry matches its own hash, but its `prev_hash` is not the hash of `previous_seq`
    /// (0 for the first entry, whose `prev_hash` must be all zeros).
    BrokenLink { seq: u64, previous_seq: u64 },
}

impl Problem {
    /// Returns the sequence number of the first entry this problem names.
    pub fn seq(&self) -> u64 {
        match self {
            Self::Missing { first, .. } => *first,
            Self::Altered { seq } | Self::Moved { seq, .. } | Self::BrokenLink { seq, .. } => *seq,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { first, last } if first == last => {
                write!(f, "entry {first} is missing (deleted)")
            }
            Self::Missing { first, last } => {
                write!(f, "entries {first} to {last} are missing (deleted)")
            }
            Self::Altered { seq } => write!(
                f,
                "entry {seq} was altered: its content does not match its hash"
            ),
            Self::Moved { seq, written_as } => write!(
                f,
                "entry {seq} is out of order: it was written as entry {written_as} (reordered)"
            ),
            Self::BrokenLink {
                seq,
                previous_seq: 0,
            } => write!(
                f,
                "entry {seq} does not start the chain: its prev_hash is not all zeros, so \
                 earlier entries were removed"
            ),
            Self::BrokenLink { seq, previous_seq } => write!(
                f,
                "entry {seq} does not follow entry {previous_seq}: its prev_hash is not the hash \
                 of entry {previous_seq}, so entry {previous_seq} was replaced"
            ),
        }
    }
}

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub entries: usize,
    /// The sequence number and hash of the newest entry. Keep them elsewhere to detect later
    /// removal of the newest entries, which the chain alone cannot show.
    pub head: Option<(u64, String)>,
    /// Every problem found, ordered by the sequence number it names.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks `records`, in any order, and names every edited, deleted or moved entry.
pub fn verify(records: &[AuditRecord]) -> VerifyReport {
    let mut ordered: Vec<&AuditRecord> = records.iter().collect();
    ordered.sort_by_key(|record| record.seq);
    let written_as = positions_by_chain(&ordered);

    let mut problems = Vec::new();
    let mut expected_seq = 1u64;
    // The previous entry by sequence number, when its own hash matched.
    let mut previous_intact: Option<&AuditRecord> = None;
    for (index, record) in ordered.iter().enumerate() {
        if record.seq > expected_seq {
            problems.push(Problem::Missing {
                first: expected_seq,
                last: record.seq - 1,
            });
        } else if record.seq < expected_seq {
            // A repeated sequence number: only a copy of the log, not the table, can hold one.
            problems.push(Problem::Altered { seq: record.seq });
            continue;
        }
        expected_seq = record.seq + 1;

        if record.computed_hash().as_deref() != Some(record.hash.as_str()) {
            let moved_from = written_as.get(&index).copied().filter(|&position| {
                position != record.seq
                    && record.computed_hash_at(position).as_deref() == Some(record.hash.as_str())
            });
            problems.push(match moved_from {
                Some(position) => Problem::Moved {
                    seq: record.seq,
                    written_as: position,
                },
                None => Problem::Altered { seq: record.seq },
            });
            previous_intact = None;
            continue;
        }

        if record.seq == 1 && record.prev_hash != GENESIS_HASH {
            problems.push(Problem::BrokenLink {
                seq: 1,
                previous_seq: 0,
            });
        }
        if let Some(previous) = previous_intact {
            if previous.seq + 1 == record.seq && previous.hash != record.prev_hash {
                problems.push(Problem::BrokenLink {
                    seq: record.seq,
                    previous_seq: previous.seq,
                });
            }
        }
        previous_intact = Some(record);
    }

    VerifyReport {
        entries: ordered.len(),
        head: ordered
            .last()
            .map(|record| (record.seq, record.hash.clone())),
        problems,
    }
}

/// Follows the `prev_hash` links from the first entry and returns, for each index of `ordered`
/// the walk reaches, the sequence number that entry was written with. The walk stops where an
/// entry was deleted or its stored hash changed.
fn positions_by_chain(ordered: &[&AuditRecord]) -> HashMap<usize, u64> {
    let mut by_prev_hash: HashMap<&str, usize> = HashMap::with_capacity(ordered.len());
    for (index, record) in ordered.iter().enumerate() {
        by_prev_hash
            .entry(record.prev_hash.as_str())
            .or_insert(index);
    }
    let mut positions = HashMap::with_capacity(ordered.len());
    let mut current = GENESIS_HASH;
    let mut position = 1u64;
    while let Some(&index) = by_prev_hash.get(current) {
        // An entry reached twice means its hash equals an earlier prev_hash: a loop made by edits.
        if positions.insert(index, position).is_some() {
            break;
        }
        current = ordered[index].hash.as_str();
        position += 1;
    }
    positions
}
