//! Tests of the rollout state machine with a fake clock and scripted outcomes.

use std::cell::RefCell;
use std::collections::BTreeMap;

use super::*;
use crate::rollout::plan::parse_waves;

const T0: i64 = 1_800_000_000;

/// Scripted outcomes: agent id to its latest outcome for the bundle.
#[derive(Default)]
struct Outcomes(RefCell<BTreeMap<String, BundleOutcome>>);

impl Outcomes {
    fn set(&self, agent: &str, outcome: BundleOutcome) {
        self.0.borrow_mut().insert(agent.to_owned(), outcome);
    }

    fn get(&self, agent: &str) -> Option<BundleOutcome> {
        self.0.borrow().get(agent).cloned()
    }
}

/// A window source whose every window ends at one fixed time.
struct WindowEndsAt(i64);

impl WindowSource for WindowEndsAt {
    fn window_end_for(&self, _tier: &str, _sent_at_unix_s: i64) -> Option<i64> {
        Some(self.0)
    }
}

fn bundle() -> BundleRef {
    BundleRef {
        bundle_id: "fix-1".into(),
        stream: "baseline".into(),
        sequence: 1,
        bundle_hash: "ab".repeat(32),
    }
}

fn spec(canary: u32, waves: &str, threshold: u32, on_failure: FailureAction) -> RolloutSpec {
    RolloutSpec {
        canary,
        waves: parse_waves(waves).unwrap(),
        max_concurrent_per_tier: None,
        failure_threshold: FailureThreshold::Count(threshold),
        on_failure,
        grace_seconds: 120,
    }
}

/// Agents `a00`, `a01`, … in tier `office`.
fn targets(count: usize) -> Vec<Target> {
    (0..count)
        .map(|n| Target {
            agent_id: format!("a{n:02}"),
            tier: "office".into(),
        })
        .collect()
}

fn sent_to(advance: &Advance) -> Vec<String> {
    advance
        .orders
        .iter()
        .filter_map(|order| match order {
            RolloutOrder::SendBundle { agent_id } => Some(agent_id.clone()),
            RolloutOrder::SendRollback { .. } => None,
        })
        .collect()
}

fn rollbacks_to(advance: &Advance) -> Vec<String> {
    advance
        .orders
        .iter()
        .filter_map(|order| match order {
            RolloutOrder::SendRollback { agent_id } => Some(agent_id.clone()),
            RolloutOrder::SendBundle { .. } => None,
        })
        .collect()
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("a{n:02}")).collect()
}

fn rejected() -> BundleOutcome {
    BundleOutcome::Reverted {
        step: Some(0),
        detail: "sysctl write failed".into(),
    }
}

#[test]
fn canary_then_waves_pause_at_second_failure() {
    let outcomes = Outcomes::default();
    let mut rollout = Rollout::plan(
        1,
        bundle(),
        spec(2, "2,10%,50%,100%", 2, FailureAction::Pause),
        targets(20),
        "it@desk".into(),
        T0,
    )
    .unwrap();
    assert_eq!(rollout.wave_ends, vec![2, 10, 20]);

    let first = rollout.advance(T0, &|id| outcomes.get(id), &NoWindows);
    assert_eq!(sent_to(&first), names(0..2), "only the canaries");

    // One canary applied, one failed: the canary wave is complete with 1 failure.
    outcomes.set("a00", BundleOutcome::Applied);
    outcomes.set("a01", rejected());
    let second = rollout.advance(T0 + 10, &|id| outcomes.get(id), &NoWindows);
    assert_eq!(sent_to(&second), names(2..10), "wave 2 is agents 2 to 9");
    assert_eq!(rollout.status, RolloutStatus::Running);

    // A second failure in wave 2 pauses the rollout; nothing more is sent.
    outcomes.set("a05", rejected());
    let third = rollout.advance(T0 + 20, &|id| outcomes.get(id), &NoWindows);
    assert!(third.orders.is_empty(), "{third:?}");
    assert_eq!(
        rollout.status,
        RolloutStatus::Paused {
            reason: "2 failed agents reached the failure threshold of 2".into()
        }
    );

    // A third failure and every other outcome of wave 2 start no further wave while paused.
    for n in 2..10 {
        if n != 5 {
            outcomes.set(&format!("a{n:02}"), BundleOutcome::Applied);
        }
    }
    outcomes.set("a07", rejected());
    let fourth = rollout.advance(T0 + 30, &|id| outcomes.get(id), &NoWindows);
    assert!(fourth.orders.is_empty(), "{fourth:?}");
    assert_eq!(rollout.failed_count(), 3);
    let sent: Vec<&str> = rollout
        .agents
        .iter()
        .filter(|agent| agent.sent_at_unix_s.is_some())
        .map(|agent| agent.agent_id.as_str())
        .collect();
    assert_eq!(sent.len(), 10, "only waves 1 and 2: {sent:?}");
    assert_eq!(
        StateCounts::of(rollout.agents.iter().filter(|agent| agent.wave == 2)).pending,
        10
    );
}

#[test]
fn next_wave_waits_for_every_outcome() {
    let outcomes = Outcomes::default();
    let mut rollout = Rollout::plan(
        1,
        bundle(),
        spec(1, "100%", 5, FailureAction::Pause),
        targets(3),
        "it".into(),
        T0,
    )
    .unwrap();
    assert_eq!(
        sent_to(&rollout.advance(T0, &|id| outcomes.get(id), &NoWindows)),
        names(0..1)
    );

    for pending in [
        BundleOutcome::Accepted,
        BundleOutcome::Deferred {
            reason: "clock".into(),
        },
        BundleOutcome::Running { step: 0 },
    ] {
        outcomes.set("a00", pending);
        let advance = rollout.advance(T0 + 1, &|id| outcomes.get(id), &NoWindows);
        assert!(sent_to(&advance).is_empty(), "{advance:?}");
    }
    assert_eq!(rollout.agents[0].state, AgentState::Running { step: 0 });

    outcomes.set("a00", BundleOutcome::AlreadyApplied);
    let advance = rollout.advance(T0 + 2, &|id| outcomes.get(id), &NoWindows);
    assert_eq!(sent_to(&advance), names(1..3));
    outcomes.set("a01", BundleOutcome::Applied);
    outcomes.set("a02", BundleOutcome::Applied);
    rollout.advance(T0 + 3, &|id| outcomes.get(id), &NoWindows);
    assert_eq!(rollout.status, RolloutStatus::Completed);
}

#[test]
fn silent_agent_fails_after_window_end_and_grace() {
    let outcomes = Outcomes::default();
    let mut rollout = Rollout::plan(
        1,
        bundle(),
        spec(1, "100%", 1, FailureAction::Pause),
        targets(2),
        "it".into(),
        T0,
    )
    .unwrap();
    // The window closes 10 minutes after the bundle is sent; the grace period is 2 minutes.
    let window = WindowEndsAt(T0 + 600);
    rollout.advance(T0, &|id| outcomes.get(id), &window);
    assert_eq!(rollout.agents[0].deadline_unix_s, Some(T0 + 720));

    rollout.advance(T0 + 719, &|id| outcomes.get(id), &window);
    assert_eq!(rollout.agents[0].state, AgentState::Delivered);
    assert_eq!(rollout.status, RolloutStatus::Running);

    rollout.advance(T0 + 720, &|id| outcomes.get(id), &window);
    assert!(
        matches!(
            rollout.agents[0].state,
            AgentState::Failed {
                timed_out: true,
                ..
            }
        ),
        "{:?}",
        rollout.agents[0].state
    );
    assert_eq!(rollout.status.name(), "paused");
    assert!(rollout.agents[1].sent_at_unix_s.is_none());
}

#[test]
fn deadline_without_window_is_send_time_plus_grace() {
    let mut rollout = Rollout::plan(
        1,
        bundle(),
        spec(0, "100%", 1, FailureAction::Pause),
        targets(1),
        "it".into(),
        T0,
    )
    .unwrap();
    rollout.advance(T0, &|_| None, &NoWindows);
    assert_eq!(rollout.agents[0].deadline_unix_s, Some(T0 + 120));
}

#[test]
fn late_success_replaces_missed_deadline() {
    let outcomes = Outcomes::default();
    let mut rollout = Rollout::plan(
        1,
        bundle(),
        spec(0, "100%", 5, FailureAction::Pause),
        targets(1),
        "it".into(),
        T0,
    )
    .unwrap();
    rollout.advance(T0, &|id| outcomes.get(id), &NoWindows);
    rollout.advance(T0 + 200, &|id| outcomes.get(id), &NoWindows);
    assert_eq!(rollout.agents[0].state.name(), "failed");
    outcomes.set("a00", BundleOutcome::Applied);
    rollout.advance(T0 + 300, &|id| outcomes.get(id), &NoWindows);
    assert_eq!(rollout.agents[0].state, AgentState::Applied);
}

#[test]
fn cap_limits_changing_agents_per_tier() {
    let outcomes = Outcomes::default();
    let mut spec = spec(0, "100%", 10, FailureAction::Pause);
    spec.max_concurrent_per_tier = Some(2);
    let mut targets = targets(6);
    for target in &mut targets[3..] {
        target.tier = "plant-floor".into();
    }
    let mut rollout = Rollout::plan(1, bundle(), spec, targets, "it".into(), T0).unwrap();

    let first = rollout.advance(T0, &|id| outcomes.get(id), &NoWindows);
    assert_eq!(sent_to(&first), vec!["a00", "a01", "a03", "a04"]);

    outcomes.set("a00", BundleOutcome::Applied);
    let second = rollout.advance(T0 + 1, &|id| outcomes.get(id), &NoWindows);
    assert_eq!(sent_to(&second), vec!["a02"], "one office agent finished");
}

#[test]
fn revert_rolls_back_every_applied_agent() {
    let outcomes = Outcomes::default();
    let mut rollout = Rollout::plan(
        1,
        bundle(),
        spec(0, "100%", 1, FailureAction::Revert),
        targets(3),
        "it".into(),
        T0,
    )
    .unwrap();
    rollout.advance(T0, &|id| outcomes.get(id), &NoWindows);
    outcomes.set("a00", BundleOutcome::Applied);
    outcomes.set("a01", rejected());
    let advance = rollout.advance(T0 + 1, &|id| outcomes.get(id), &NoWindows);
    assert_eq!(rollbacks_to(&advance), vec!["a00"]);
    assert_eq!(rollout.status.name(), "reverting");

    // a02 applies after the threshold was reached, so it is rolled back too.
    outcomes.set("a02", BundleOutcome::Applied);
    let advance = rollout.advance(T0 + 2, &|id| outcomes.get(id), &NoWindows);
    assert_eq!(rollbacks_to(&advance), vec!["a02"]);
    assert!(rollout
        .advance(T0 + 3, &|id| outcomes.get(id), &NoWindows)
        .orders
        .is_empty());

    outcomes.set("a00", BundleOutcome::RolledBack);
    outcomes.set(
        "a02",
        BundleOutcome::RollbackFailed {
            step: 0,
            detail: "backup missing".into(),
        },
    );
    rollout.advance(T0 + 4, &|id| outcomes.get(id), &NoWindows);
    assert_eq!(rollout.status.name(), "rolled-back");
    let counts = StateCounts::of(&rollout.agents);
    assert_eq!(
        (counts.rolled_back, counts.rollback_failed, counts.failed),
        (1, 1, 1)
    );
}

#[test]
fn resume_counts_failures_from_the_resume() {
    let outcomes = Outcomes::default();
    let mut rollout = Rollout::plan(
        1,
        bundle(),
        spec(2, "100%", 1, FailureAction::Pause),
        targets(4),
        "it".into(),
        T0,
    )
    .unwrap();
    rollout.advance(T0, &|id| outcomes.get(id), &NoWindows);
    outcomes.set("a00", rejected());
    outcomes.set("a01", BundleOutcome::Applied);
    rollout.advance(T0 + 1, &|id| outcomes.get(id), &NoWindows);
    assert_eq!(rollout.status.name(), "paused");
    assert_eq!(
        rollout.pause("by hand").unwrap_err().to_string(),
        "rollout 1 is already paused, so it cannot be paused again"
    );

    rollout.resume().unwrap();
    let advance = rollout.advance(T0 + 2, &|id| outcomes.get(id), &NoWindows);
    assert_eq!(sent_to(&advance), names(2..4));
    assert_eq!(rollout.status, RolloutStatus::Running);
}

#[test]
fn stopped_rollout_sends_nothing() {
    let outcomes = Outcomes::default();
    let mut rollout = Rollout::plan(
        1,
        bundle(),
        spec(1, "100%", 5, FailureAction::Pause),
        targets(3),
        "it".into(),
        T0,
    )
    .unwrap();
    rollout.advance(T0, &|id| outcomes.get(id), &NoWindows);
    rollout.stop("fleet-wide stop").unwrap();
    outcomes.set("a00", BundleOutcome::Applied);
    let advance = rollout.advance(T0 + 1, &|id| outcomes.get(id), &NoWindows);
    assert!(advance.orders.is_empty());
    assert_eq!(
        rollout.agents[0].state,
        AgentState::Applied,
        "outcomes are still recorded"
    );
    assert_eq!(
        rollout.resume().unwrap_err().to_string(),
        "rollout 1 is stopped, so it cannot be resumed"
    );
    assert!(rollout.stop("again").is_err());
}

#[test]
fn outcome_before_sending_is_ignored() {
    let mut rollout = Rollout::plan(
        1,
        bundle(),
        spec(1, "100%", 5, FailureAction::Pause),
        targets(2),
        "it".into(),
        T0,
    )
    .unwrap();
    // The agents report an old success of this bundle. Outcomes are read before this call
    // sends anything, so the canary counts as delivered and the other agent as pending.
    rollout.advance(T0, &|_| Some(BundleOutcome::Applied), &NoWindows);
    assert_eq!(rollout.agents[0].state, AgentState::Delivered);
    assert_eq!(rollout.agents[1].state, AgentState::Pending);
}

/// Window ends from real calendars, one per tier, by the arithmetic the server uses.
struct Calendars(BTreeMap<String, tidegate_protocol::window::Calendar>);

impl WindowSource for Calendars {
    fn window_end_for(&self, tier: &str, sent_at_unix_s: i64) -> Option<i64> {
        let calendar = self.0.get(tier)?;
        crate::schedules::window_end_after(calendar, sent_at_unix_s)
    }
}

/// 2027-01-15T00:00:00Z, the midnight before `T0` (08:00Z).
const JAN_15: i64 = T0 - 8 * 3600;

/// Windows every night 22:00 to 24:00 UTC, no new starts in the last hour, valid in January
/// 2027 up to `expires_unix_s`.
fn nightly(freezes: Vec<tidegate_protocol::window::Freeze>, expires_unix_s: i64) -> Calendars {
    use tidegate_protocol::window::{Calendar, CalendarSpec, WindowRule};
    let spec = CalendarSpec {
        zone: "UTC".into(),
        // 2027-01-01T00:00:00Z.
        not_before_unix_s: 1_798_761_600,
        expires_unix_s,
        windows: vec![WindowRule::Recurring {
            cron: "0 22 * * *".into(),
            duration_s: 2 * 3600,
            cutoff_s: Some(3600),
        }],
        freezes,
    };
    let calendar = Calendar::new(&spec).unwrap();
    Calendars(BTreeMap::from([("office".to_owned(), calendar)]))
}

/// 2027-02-01T00:00:00Z.
const FEB_1: i64 = 1_801_440_000;

#[test]
fn window_end_skips_cutoff_and_freeze() {
    let plain = nightly(Vec::new(), FEB_1);
    // Sent 08:00Z: tonight's window, ending 2027-01-16T00:00Z.
    assert_eq!(plain.window_end_for("office", T0), Some(JAN_15 + 24 * 3600));
    // Sent 23:30Z, past tonight's 23:00Z cutoff: the next night's window.
    assert_eq!(
        plain.window_end_for("office", JAN_15 + 23 * 3600 + 1800),
        Some(JAN_15 + 48 * 3600)
    );
    assert_eq!(
        plain.window_end_for("lab", T0),
        None,
        "tier without schedule"
    );

    let frozen = nightly(
        vec![tidegate_protocol::window::Freeze {
            start_unix_s: JAN_15,
            end_unix_s: JAN_15 + 24 * 3600,
            reason: "inventory count".into(),
        }],
        FEB_1,
    );
    assert_eq!(
        frozen.window_end_for("office", T0),
        Some(JAN_15 + 48 * 3600),
        "tonight is frozen"
    );

    // Expires 2027-01-15T12:00Z, before tonight's window.
    let expiring = nightly(Vec::new(), JAN_15 + 12 * 3600);
    assert_eq!(expiring.window_end_for("office", T0), None);
}

#[test]
fn agent_not_failed_before_later_window_ends() {
    let windows = nightly(Vec::new(), FEB_1);
    let outcomes = Outcomes::default();
    let mut rollout = Rollout::plan(
        1,
        bundle(),
        spec(0, "100%", 1, FailureAction::Pause),
        targets(1),
        "it".into(),
        T0,
    )
    .unwrap();
    let first = rollout.advance(T0, &|id| outcomes.get(id), &windows);
    assert_eq!(sent_to(&first), vec!["a00"]);
    // Tonight's window ends 2027-01-16T00:00Z; the grace is 120 s.
    let window_end = JAN_15 + 24 * 3600;
    assert_eq!(rollout.agents[0].deadline_unix_s, Some(window_end + 120));

    // Past the send time plus grace, inside the window, and in the grace after it: pending.
    for now in [T0 + 121, JAN_15 + 22 * 3600 + 60, window_end + 119] {
        rollout.advance(now, &|id| outcomes.get(id), &windows);
        assert_eq!(rollout.agents[0].state, AgentState::Delivered, "at {now}");
        assert_eq!(rollout.status, RolloutStatus::Running, "at {now}");
    }

    rollout.advance(window_end + 120, &|id| outcomes.get(id), &windows);
    assert_eq!(rollout.agents[0].state.name(), "failed");
    assert_eq!(rollout.status.name(), "paused");
}
