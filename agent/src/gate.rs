//! The gate between accepted bundles and the executor: the queue of bundles waiting for a
//! maintenance window, the schedules that define when a window is open, and the records reported
//! to the server while a bundle waits.
//!
//! This module owns the decision of *when* a verified bundle starts; it never decides *whether*
//! (that is the trust store's) nor *how* (the executor's). It decides from the signed schedule
//! and the agent's own clock alone, so it works with the server unreachable. A bundle leaves the
//! queue just before the executor journals its start: if the agent stops in between, the
//! bundle's newest record is still `Accepted`, and start-up queues it again.

use std::collections::BTreeMap;
use std::path::Path;

use tidegate_protocol::trust::{BundleFile, BundleHash, ClockTrust};
use tidegate_protocol::BundleOutcome;

use crate::executor::AcceptedBundle;
use crate::queue::{decide_start, Queue, QueueError, StartDecision};
use crate::schedule::{ScheduleDecision, ScheduleStore, ScheduleStoreError};
use crate::trust::TrustStore;

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Schedules(#[from] ScheduleStoreError),
}

/// The result of one look at the queue.
#[derive(Debug, Default)]
pub struct Poll {
    /// The bundle to start now, already out of the queue.
    pub start: Option<AcceptedBundle>,
    /// Whether a record reported to the server changed (a new wait reason, an expiry).
    pub records_changed: bool,
}

pub struct Gate {
    queue: Queue,
    schedules: ScheduleStore,
    require_schedule: bool,
    /// The wait last recorded for each waiting bundle, so a record is rewritten only on change.
    recorded_waits: BTreeMap<BundleHash, BundleOutcome>,
}

impl Gate {
    pub fn open(
        state_dir: &Path,
        tier: &str,
        site: Option<&str>,
        require_schedule: bool,
    ) -> Result<Self, GateError> {
        Ok(Self {
            queue: Queue::open(state_dir)?,
            schedules: ScheduleStore::open(state_dir, tier, site)?,
            require_schedule,
            recorded_waits: BTreeMap::new(),
        })
    }

    /// Puts a bundle the trust store accepted into the queue.
    pub fn enqueue(&mut self, file: &[u8]) -> Result<(), GateError> {
        let Ok(bundle) = BundleFile::decode(file) else {
            return Ok(());
        };
        let Ok(manifest) = bundle.manifest() else {
            return Ok(());
        };
        tracing::info!(bundle.id = %manifest.bundle_id, "bundle waits for its maintenance window");
        self.queue.push(file, manifest, bundle.bundle_hash())?;
        Ok(())
    }

    /// Returns the number of bundles waiting.
    pub fn waiting(&self) -> usize {
        self.queue.waiting().len()
    }

    /// Returns the version of the schedule that governs the agent (its site's when it has
    /// one, else its tier's), for reports.
    pub fn governing_schedule_version(&self) -> Option<u64> {
        self.schedules.governing().map(|held| held.document.version)
    }

    /// Verifies and keeps a schedule file from the server.
    pub fn receive_schedule(
        &mut self,
        file: &[u8],
        trust: &mut TrustStore,
        now_unix_s: i64,
    ) -> Result<ScheduleDecision, GateError> {
        let clock = observe(trust, now_unix_s);
        Ok(self
            .schedules
            .receive(file, trust.root(), now_unix_s, &clock)?)
    }

    /// Looks at the queue at `now_unix_s` and takes out the oldest bundle that may start now.
    /// On the way it verifies kept schedules again once the clock is trusted, drops bundles that
    /// expired while waiting, and records why the others wait and when they should start.
    pub fn poll(&mut self, trust: &mut TrustStore, now_unix_s: i64) -> Result<Poll, GateError> {
        let clock = observe(trust, now_unix_s);
        for decision in self
            .schedules
            .retry_deferred(trust.root(), now_unix_s, &clock)?
        {
            tracing::info!(?decision, "verified a kept schedule again");
        }
        let calendar = self.schedules.governing().map(|held| &held.calendar);
        let mut poll = Poll::default();
        let mut expired = Vec::new();
        let mut start = None;
        for waiting in self.queue.waiting() {
            let decision = match (calendar, self.require_schedule) {
                (None, false) if matches!(clock, ClockTrust::Trusted) => {
                    if waiting.manifest.expires_unix_s <= now_unix_s {
                        StartDecision::Expired
                    } else {
                        StartDecision::Start
                    }
                }
                _ => decide_start(&waiting.manifest, now_unix_s, &clock, calendar),
            };
            match decision {
                StartDecision::Start if start.is_none() => start = Some(waiting.clone()),
                // Only one bundle runs at a time; the next waits for the next look.
                StartDecision::Start => {}
                StartDecision::Expired => expired.push(waiting.clone()),
                StartDecision::Wait {
                    code,
                    reason,
                    expected_start_unix_s,
                } => {
                    let outcome = BundleOutcome::Waiting {
                        code: code.to_owned(),
                        reason,
                        expected_start_unix_s,
                    };
                    if self.recorded_waits.get(&waiting.hash) != Some(&outcome) {
                        if let Err(error) = trust.update_record(
                            &waiting.hash,
                            waiting.manifest.bundle_id.as_str(),
                            outcome.clone(),
                            Vec::new(),
                            now_unix_s,
                        ) {
                            tracing::warn!(%error, "cannot record why a bundle waits");
                        }
                        self.recorded_waits.insert(waiting.hash, outcome);
                        poll.records_changed = true;
                    }
                }
            }
        }
        for waiting in expired {
            tracing::warn!(bundle.id = %waiting.manifest.bundle_id, "bundle expired while it waited for a window");
            self.queue.remove(&waiting.hash)?;
            self.recorded_waits.remove(&waiting.hash);
            let outcome = BundleOutcome::Rejected {
                rule: "expired".into(),
                detail: format!(
                    "the bundle expired at {} while it waited for a maintenance window",
                    tidegate_protocol::trust::format_unix_s(waiting.manifest.expires_unix_s)
                ),
            };
            if let Err(error) = trust.update_record(
                &waiting.hash,
                waiting.manifest.bundle_id.as_str(),
                outcome,
                Vec::new(),
                now_unix_s,
            ) {
                tracing::warn!(%error, "cannot record an expired bundle");
            }
            poll.records_changed = true;
        }
        if let Some(waiting) = start {
            self.queue.remove(&waiting.hash)?;
            self.recorded_waits.remove(&waiting.hash);
            match AcceptedBundle::from_verified_file(&waiting.file) {
                Ok(bundle) => poll.start = Some(bundle),
                Err(reason) => {
                    tracing::error!(bundle.id = %waiting.manifest.bundle_id, %reason, "cannot decode a queued bundle")
                }
            }
        }
        Ok(poll)
    }
}

/// Reads the clock's trust, recording a trusted reading as the latest time seen.
fn observe(trust: &mut TrustStore, now_unix_s: i64) -> ClockTrust {
    match trust.observe_clock(now_unix_s) {
        Ok(clock) => clock,
        Err(error) => {
            // Without the record, a later start could not catch a clock set back. So nothing
            // starts until it can be written.
            tracing::warn!(%error, "cannot persist the latest time seen");
            ClockTrust::Untrusted {
                reason: format!("cannot persist the latest time seen: {error}"),
            }
        }
    }
}
