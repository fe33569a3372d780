//! Reassembly of reports that agents split into [`ReportChunk`]s.
//!
//! Parts are kept in memory, keyed by `(agent_id, boot_id, seq)`, until all `count` parts of a
//! report are in. Then their bytes are joined and decoded as an envelope, which must contain a
//! [`Message::Report`] with the same ids. Every resource is bounded, because parts come from the
//! network: see the `MAX_*` constants and [`PENDING_TTL`]. A part whose report is evicted or expires
//! is lost, and the agent has to send the report again.

use std::collections::HashMap;
use std::time::Duration;

use tidegate_protocol::{decode, AgentId, BootId, DecodeError, Message, Report, ReportChunk};
use tracing::warn;

/// The maximum number of parts of one report.
pub const MAX_PARTS: u32 = 1024;

/// The maximum total size of the parts of one report, in bytes. This is also the largest decompressed
/// body the envelope decoder accepts, so a larger report could not be decoded anyway.
pub const MAX_REPORT_BYTES: usize = tidegate_protocol::envelope::MAX_DECODED_BYTES;

/// The maximum number of incomplete reports. When a part of another report arrives, the incomplete
/// report whose first part arrived earliest is dropped.
pub const MAX_PENDING_REPORTS: usize = 1000;

/// The maximum total size of all incomplete reports, in bytes. Beyond it the earliest are dropped.
pub const MAX_PENDING_BYTES: usize = 128 * 1024 * 1024;

/// How long an incomplete report is kept after its first part arrived.
pub const PENDING_TTL: Duration = Duration::from_secs(10 * 60);

/// How often expired reports are looked for.
const EXPIRY_SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// The identity of one report.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReportKey {
    pub agent_id: AgentId,
    pub boot_id: BootId,
    pub seq: u64,
}

/// The result of adding one part.
#[derive(Debug)]
pub enum ChunkOutcome {
    /// The part is kept; the report still misses parts.
    Incomplete,
    /// The part repeats one already kept (QoS 1 delivers duplicates) and was ignored.
    DuplicatePart,
    /// This was the last missing part.
    Complete(Box<Report>),
    /// The part, or the report it completed, is invalid; everything kept for the report is gone.
    Rejected(ChunkError),
}

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("part count {count} is outside 1..={MAX_PARTS}")]
    InvalidCount { count: u32 },
    #[error("part index {index} is not below the part count {count}")]
    IndexOutOfRange { index: u32, count: u32 },
    #[error("part count changed from {kept} to {received} within one report")]
    CountChanged { kept: u32, received: u32 },
    #[error("the parts add up to more than {MAX_REPORT_BYTES} bytes")]
    TooLarge,
    #[error("the joined parts are not a valid envelope: {0}")]
    Decode(#[from] DecodeError),
    #[error("the joined parts hold a {kind} message, expected a report")]
    NotAReport { kind: &'static str },
    #[error(
        "the joined parts hold report {found_boot_id}/{found_seq} of agent {found_agent_id}, \
         expected the ids of the parts"
    )]
    IdsDiffer {
        found_agent_id: AgentId,
        found_boot_id: BootId,
        found_seq: u64,
    },
}

struct PendingReport {
    count: u32,
    parts: Vec<Option<Vec<u8>>>,
    received: u32,
    bytes: usize,
    first_part_at: Duration,
}

/// Incomplete reports and their parts.
pub struct ChunkAssembler {
    pending: HashMap<ReportKey, PendingReport>,
    pending_bytes: usize,
    last_expiry_scan: Option<Duration>,
}

impl ChunkAssembler {
    pub fn new() -> Self {
        Self {
            pending: HashMap::new(),
            pending_bytes: 0,
            last_expiry_scan: None,
        }
    }

    /// The number of incomplete reports.
    pub fn pending_reports(&self) -> usize {
        self.pending.len()
    }

    /// The bytes kept for incomplete reports.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Adds one part, received at monotonic time `now`.
    pub fn add(&mut self, chunk: ReportChunk, now: Duration) -> ChunkOutcome {
        self.expire(now);

        let key = ReportKey {
            agent_id: chunk.agent_id,
            boot_id: chunk.boot_id,
            seq: chunk.seq,
        };
        if chunk.count == 0 || chunk.count > MAX_PARTS {
            self.remove(&key);
            return ChunkOutcome::Rejected(ChunkError::InvalidCount { count: chunk.count });
        }
        if chunk.index >= chunk.count {
            self.remove(&key);
            return ChunkOutcome::Rejected(ChunkError::IndexOutOfRange {
                index: chunk.index,
                count: chunk.count,
            });
        }

        if !self.pending.contains_key(&key) {
            self.make_room_for_report(now);
            self.pending.insert(
                key.clone(),
                PendingReport {
                    count: chunk.count,
                    parts: vec![None; chunk.count as usize],
                    received: 0,
                    bytes: 0,
                    first_part_at: now,
                },
            );
        }

        let report = self.pending.get_mut(&key).expect("inserted above");
        if report.count != chunk.count {
            let kept = report.count;
            self.remove(&key);
            return ChunkOutcome::Rejected(ChunkError::CountChanged {
                kept,
                received: chunk.count,
            });
        }
        let slot = &mut report.parts[chunk.index as usize];
        if slot.is_some() {
            return ChunkOutcome::DuplicatePart;
        }
        let part_len = chunk.bytes.len();
        if report.bytes + part_len > MAX_REPORT_BYTES {
            self.remove(&key);
            return ChunkOutcome::Rejected(ChunkError::TooLarge);
        }
        *slot = Some(chunk.bytes);
        report.received += 1;
        report.bytes += part_len;
        self.pending_bytes += part_len;
        let complete = report.received == report.count;

        if complete {
            let report = self.remove(&key).expect("present above");
            return match join_and_decode(&key, report) {
                Ok(report) => ChunkOutcome::Complete(Box::new(report)),
                Err(error) => ChunkOutcome::Rejected(error),
            };
        }
        self.enforce_byte_limit(&key);
        ChunkOutcome::Incomplete
    }

    fn remove(&mut self, key: &ReportKey) -> Option<PendingReport> {
        let report = self.pending.remove(key)?;
        self.pending_bytes -= report.bytes;
        Some(report)
    }

    fn expire(&mut self, now: Duration) {
        let due = match self.last_expiry_scan {
            Some(last) => now.saturating_sub(last) >= EXPIRY_SCAN_INTERVAL,
            None => true,
        };
        if !due {
            return;
        }
        self.last_expiry_scan = Some(now);
        let expired: Vec<ReportKey> = self
            .pending
            .iter()
            .filter(|(_, report)| now.saturating_sub(report.first_part_at) >= PENDING_TTL)
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            if let Some(report) = self.remove(&key) {
                warn!(
                    agent.id = %key.agent_id,
                    boot.id = %key.boot_id,
                    seq = key.seq,
                    parts_received = report.received,
                    parts = report.count,
                    "dropped an incomplete chunked report: parts missing after {PENDING_TTL:?}"
                );
            }
        }
    }

    /// Drops the earliest incomplete reports until one more fits under [`MAX_PENDING_REPORTS`].
    fn make_room_for_report(&mut self, now: Duration) {
        while self.pending.len() >= MAX_PENDING_REPORTS {
            self.evict_earliest(None, "too many incomplete chunked reports", now);
        }
    }

    /// Drops the earliest incomplete reports other than `keep` until all fit under
    /// [`MAX_PENDING_BYTES`]. `keep` alone is at most [`MAX_REPORT_BYTES`], which is smaller.
    fn enforce_byte_limit(&mut self, keep: &ReportKey) {
        while self.pending_bytes > MAX_PENDING_BYTES && self.pending.len() > 1 {
            let now = self.pending[keep].first_part_at;
            self.evict_earliest(
                Some(keep),
                "incomplete chunked reports use too much memory",
                now,
            );
        }
    }

    fn evict_earliest(&mut self, keep: Option<&ReportKey>, reason: &str, now: Duration) {
        let earliest = self
            .pending
            .iter()
            .filter(|(key, _)| Some(*key) != keep)
            .min_by_key(|(_, report)| report.first_part_at)
            .map(|(key, _)| key.clone());
        let Some(key) = earliest else {
            return;
        };
        if let Some(report) = self.remove(&key) {
            warn!(
                agent.id = %key.agent_id,
                boot.id = %key.boot_id,
                seq = key.seq,
                parts_received = report.received,
                parts = report.count,
                age_s = now.saturating_sub(report.first_part_at).as_secs(),
                "dropped an incomplete chunked report: {reason}"
            );
        }
    }
}

impl Default for ChunkAssembler {
    fn default() -> Self {
        Self::new()
    }
}

fn join_and_decode(key: &ReportKey, report: PendingReport) -> Result<Report, ChunkError> {
    let mut joined = Vec::with_capacity(report.bytes);
    for part in report.parts.into_iter().flatten() {
        joined.extend_from_slice(&part);
    }
    match decode(&joined)? {
        Message::Report(report) => {
            if report.agent_id != key.agent_id
                || report.boot_id != key.boot_id
                || report.seq != key.seq
            {
                return Err(ChunkError::IdsDiffer {
                    found_agent_id: report.agent_id,
                    found_boot_id: report.boot_id,
                    found_seq: report.seq,
                });
            }
            Ok(report)
        }
        other => Err(ChunkError::NotAReport { kind: other.kind() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidegate_protocol::{encode, Inventory, ReportBody};

    fn agent() -> AgentId {
        AgentId::parse("agent-1").unwrap()
    }

    fn report(seq: u64) -> Report {
        Report {
            agent_id: agent(),
            boot_id: BootId([3; 16]),
            seq,
            collected_at_unix_s: 1_780_000_000,
            outbox_dropped: 0,
            body: ReportBody::Full(Inventory::default()),
        }
    }

    /// Splits the envelope of `report` into `count` parts of nearly equal size.
    fn split(report: &Report, count: u32) -> Vec<ReportChunk> {
        let bytes = encode(&Message::Report(report.clone())).unwrap();
        let size = bytes.len().div_ceil(count as usize);
        let parts: Vec<&[u8]> = bytes.chunks(size).collect();
        assert_eq!(parts.len(), count as usize, "{} bytes", bytes.len());
        parts
            .into_iter()
            .enumerate()
            .map(|(index, part)| chunk(report.seq, index as u32, count, part.to_vec()))
            .collect()
    }

    fn chunk(seq: u64, index: u32, count: u32, bytes: Vec<u8>) -> ReportChunk {
        ReportChunk {
            agent_id: agent(),
            boot_id: BootId([3; 16]),
            seq,
            index,
            count,
            bytes,
        }
    }

    const T0: Duration = Duration::from_secs(100);

    #[test]
    fn three_parts_in_any_order_complete_the_report() {
        let expected = report(7);
        let mut parts = split(&expected, 3);
        let mut assembler = ChunkAssembler::new();
        let last = parts.remove(1);
        for part in parts.into_iter().rev() {
            assert!(matches!(assembler.add(part, T0), ChunkOutcome::Incomplete));
        }
        assert_eq!(assembler.pending_reports(), 1);
        match assembler.add(last, T0) {
            ChunkOutcome::Complete(report) => assert_eq!(*report, expected),
            other => panic!("expected a complete report, got {other:?}"),
        }
        assert_eq!(assembler.pending_reports(), 0);
        assert_eq!(assembler.pending_bytes(), 0);
    }

    #[test]
    fn repeated_part_is_ignored() {
        let parts = split(&report(7), 2);
        let mut assembler = ChunkAssembler::new();
        assert!(matches!(
            assembler.add(parts[0].clone(), T0),
            ChunkOutcome::Incomplete
        ));
        assert!(matches!(
            assembler.add(parts[0].clone(), T0),
            ChunkOutcome::DuplicatePart
        ));
        assert!(matches!(
            assembler.add(parts[1].clone(), T0),
            ChunkOutcome::Complete(_)
        ));
    }

    #[test]
    fn invalid_counts_and_indexes_are_rejected() {
        let mut assembler = ChunkAssembler::new();
        let cases = [(0, 0), (0, MAX_PARTS + 1), (3, 3), (5, 2)];
        for (index, count) in cases {
            let outcome = assembler.add(chunk(1, index, count, vec![1]), T0);
            assert!(
                matches!(outcome, ChunkOutcome::Rejected(_)),
                "index {index} count {count}: {outcome:?}"
            );
        }
        assert_eq!(assembler.pending_reports(), 0);
    }

    #[test]
    fn changed_count_drops_the_report() {
        let mut assembler = ChunkAssembler::new();
        assert!(matches!(
            assembler.add(chunk(1, 0, 3, vec![1]), T0),
            ChunkOutcome::Incomplete
        ));
        let outcome = assembler.add(chunk(1, 1, 4, vec![2]), T0);
        assert!(matches!(
            outcome,
            ChunkOutcome::Rejected(ChunkError::CountChanged {
                kept: 3,
                received: 4
            })
        ));
        assert_eq!(assembler.pending_reports(), 0);
    }

    #[test]
    fn oversized_report_is_rejected() {
        let mut assembler = ChunkAssembler::new();
        let half = MAX_REPORT_BYTES / 2;
        assert!(matches!(
            assembler.add(chunk(1, 0, 3, vec![0; half]), T0),
            ChunkOutcome::Incomplete
        ));
        assert!(matches!(
            assembler.add(chunk(1, 1, 3, vec![0; half]), T0),
            ChunkOutcome::Incomplete
        ));
        let outcome = assembler.add(chunk(1, 2, 3, vec![0; 1]), T0);
        assert!(matches!(
            outcome,
            ChunkOutcome::Rejected(ChunkError::TooLarge)
        ));
        assert_eq!(assembler.pending_bytes(), 0);
    }

    #[test]
    fn garbage_parts_are_rejected_when_complete() {
        let mut assembler = ChunkAssembler::new();
        assert!(matches!(
            assembler.add(chunk(1, 0, 2, vec![9]), T0),
            ChunkOutcome::Incomplete
        ));
        let outcome = assembler.add(chunk(1, 1, 2, vec![0]), T0);
        assert!(matches!(
            outcome,
            ChunkOutcome::Rejected(ChunkError::Decode(DecodeError::UnknownFormat(9)))
        ));
    }

    #[test]
    fn parts_of_another_report_are_rejected() {
        // The parts claim seq 8 but join into report 7.
        let parts: Vec<ReportChunk> = split(&report(7), 2)
            .into_iter()
            .map(|mut part| {
                part.seq = 8;
                part
            })
            .collect();
        let mut assembler = ChunkAssembler::new();
        assert!(matches!(
            assembler.add(parts[0].clone(), T0),
            ChunkOutcome::Incomplete
        ));
        let outcome = assembler.add(parts[1].clone(), T0);
        assert!(
            matches!(
                outcome,
                ChunkOutcome::Rejected(ChunkError::IdsDiffer { found_seq: 7, .. })
            ),
            "{outcome:?}"
        );
    }

    #[test]
    fn incomplete_report_expires_after_ttl() {
        let mut assembler = ChunkAssembler::new();
        assert!(matches!(
            assembler.add(chunk(1, 0, 2, vec![1]), T0),
            ChunkOutcome::Incomplete
        ));

        // Just before the TTL the report is kept; at the TTL it is dropped.
        let before = T0 + PENDING_TTL - Duration::from_secs(1);
        assert!(matches!(
            assembler.add(chunk(2, 0, 2, vec![1]), before),
            ChunkOutcome::Incomplete
        ));
        assert_eq!(assembler.pending_reports(), 2);
        assert!(matches!(
            assembler.add(chunk(3, 0, 2, vec![1]), T0 + PENDING_TTL),
            ChunkOutcome::Incomplete
        ));
        assert_eq!(
            assembler.pending_reports(),
            2,
            "report 1 expired, 2 and 3 kept"
        );

        // The second part of report 1 now starts a new report instead of completing the old one.
        assert!(matches!(
            assembler.add(chunk(1, 1, 2, vec![1]), T0 + PENDING_TTL),
            ChunkOutcome::Incomplete
        ));
    }

    #[test]
    fn earliest_report_is_evicted_at_capacity() {
        let mut assembler = ChunkAssembler::new();
        for seq in 0..MAX_PENDING_REPORTS as u64 {
            let at = T0 + Duration::from_millis(seq);
            assert!(matches!(
                assembler.add(chunk(seq, 0, 2, vec![1]), at),
                ChunkOutcome::Incomplete
            ));
        }
        assert_eq!(assembler.pending_reports(), MAX_PENDING_REPORTS);

        let later = T0 + Duration::from_secs(2);
        assembler.add(chunk(5000, 0, 2, vec![1]), later);
        assert_eq!(assembler.pending_reports(), MAX_PENDING_REPORTS);
        assert_eq!(assembler.pending_bytes(), MAX_PENDING_REPORTS);

        // Report 1 is kept: its second part completes it (and the one-byte parts do not decode).
        let outcome = assembler.add(chunk(1, 1, 2, vec![1]), later);
        assert!(
            matches!(outcome, ChunkOutcome::Rejected(ChunkError::Decode(_))),
            "{outcome:?}"
        );
        // Report 0 was the earliest and is gone: its second part starts a new report.
        let outcome = assembler.add(chunk(0, 1, 2, vec![1]), later);
        assert!(matches!(outcome, ChunkOutcome::Incomplete), "{outcome:?}");
    }

    #[test]
    fn total_bytes_are_bounded() {
        let mut assembler = ChunkAssembler::new();
        let part = MAX_REPORT_BYTES / 2;
        // 8 MiB parts: 16 of them fill 128 MiB; the 17th evicts the earliest report.
        for seq in 0..17u64 {
            let at = T0 + Duration::from_millis(seq);
            let outcome = assembler.add(chunk(seq, 0, 2, vec![0; part]), at);
            assert!(matches!(outcome, ChunkOutcome::Incomplete));
        }
        assert_eq!(assembler.pending_reports(), 16);
        assert_eq!(assembler.pending_bytes(), 16 * part);
    }
}
