//! Cases worked out by hand from the tz database's rules, and properties of the queries.

use std::time::Instant;

use proptest::prelude::*;

use super::*;

/// Parses an RFC 3339 instant into seconds since the Unix epoch.
fn at(text: &str) -> i64 {
    text.parse::<jiff::Timestamp>().unwrap().as_second()
}

fn utc(unix_s: i64) -> String {
    crate::trust::format_unix_s(unix_s)
}

fn recurring(cron: &str, duration_s: u32, cutoff_s: Option<u32>) -> WindowRule {
    WindowRule::Recurring {
        cron: cron.into(),
        duration_s,
        cutoff_s,
    }
}

/// A calendar valid from 2020 to 2040 with the given rules and freezes.
fn calendar(zone: &str, windows: Vec<WindowRule>, freezes: Vec<Freeze>) -> Calendar {
    Calendar::new(&CalendarSpec {
        zone: zone.into(),
        not_before_unix_s: at("2020-01-01T00:00:00Z"),
        expires_unix_s: at("2040-01-01T00:00:00Z"),
        windows,
        freezes,
    })
    .unwrap()
}

/// Formats windows as `start–end` in UTC, for readable comparisons.
fn spans(windows: &[Window]) -> Vec<String> {
    windows
        .iter()
        .map(|w| format!("{}–{}", utc(w.start_unix_s), utc(w.end_unix_s)))
        .collect()
}

#[test]
fn spring_forward_gap_moves_start() {
    // New York switches from EST (-05) to EDT (-04) at 2026-03-08 02:00 local, so 02:30 does
    // not exist that day and the start moves to the end of the gap, 03:00 EDT = 07:00Z.
    let calendar = calendar(
        "America/New_York",
        vec![recurring("30 2 * * *", 2 * 3600, None)],
        vec![],
    );
    let windows = calendar.windows_from(at("2026-03-07T00:00:00Z"), 3);
    assert_eq!(
        spans(&windows),
        vec![
            "2026-03-07T07:30:00Z–2026-03-07T09:30:00Z",
            "2026-03-08T07:00:00Z–2026-03-08T09:00:00Z",
            "2026-03-09T06:30:00Z–2026-03-09T08:30:00Z",
        ]
    );
}

#[test]
fn fall_back_fold_fires_once() {
    // New York returns from EDT to EST at 2026-11-01 02:00 EDT, so 01:30 happens at 05:30Z and
    // again at 06:30Z; only the first one opens a window.
    let calendar = calendar(
        "America/New_York",
        vec![recurring("30 1 * * *", 45 * 60, None)],
        vec![],
    );
    let windows = calendar.windows_from(at("2026-11-01T00:00:00Z"), 2);
    assert_eq!(
        spans(&windows),
        vec![
            "2026-11-01T05:30:00Z–2026-11-01T06:15:00Z",
            // 01:30 EST on 2026-11-02.
            "2026-11-02T06:30:00Z–2026-11-02T07:15:00Z",
        ]
    );
    assert!(calendar.decide(at("2026-11-01T05:30:00Z")).is_allowed());
    let denied = calendar.decide(at("2026-11-01T06:30:00Z"));
    assert_eq!(
        denied,
        Decision::Denied {
            reason: DenyReason::OutsideWindows,
            next_allowed_unix_s: Some(at("2026-11-02T06:30:00Z")),
        }
    );
    assert_eq!(calendar.current_window(at("2026-11-01T06:30:00Z")), None);

    // An agent that restarts at 06:40Z finds no window open and the next one a day later.
    let restarted = at("2026-11-01T06:40:00Z");
    assert!(!calendar.decide(restarted).is_allowed());
    assert_eq!(
        spans(&calendar.windows_from(restarted, 1)),
        vec!["2026-11-02T06:30:00Z–2026-11-02T07:15:00Z"]
    );
    assert_eq!(
        calendar.next_allowed(restarted),
        Some(at("2026-11-02T06:30:00Z"))
    );
}

#[test]
fn weekday_window_crosses_midnight() {
    // Berlin is on CEST (+02) in June. Friday 2026-06-05 23:00 local is 21:00Z, and the 3-hour
    // window ends at 2026-06-06T00:00Z.
    let calendar = calendar(
        "Europe/Berlin",
        vec![recurring("0 23 * * MON-FRI", 3 * 3600, None)],
        vec![],
    );
    let saturday_one_am = at("2026-06-05T23:00:00Z");
    let decision = calendar.decide(saturday_one_am);
    let Decision::Allowed { window } = decision else {
        panic!("Saturday 01:00 local is not allowed: {decision:?}");
    };
    assert_eq!(window.start_unix_s, at("2026-06-05T21:00:00Z"));
    assert_eq!(window.end_unix_s, at("2026-06-06T00:00:00Z"));

    // Monday 01:00 local follows a Sunday, which has no window.
    let monday_one_am = at("2026-06-07T23:00:00Z");
    assert!(!calendar.decide(monday_one_am).is_allowed());
    assert_eq!(calendar.current_window(monday_one_am), None);

    // The end instant is outside: windows are half-open.
    let end = at("2026-06-06T00:00:00Z");
    assert!(!calendar.decide(end).is_allowed());
    assert!(calendar.decide(end - 1).is_allowed());
}

#[test]
fn day_of_month_or_day_of_week() {
    // Both day fields are restricted, so the rule fires on June 1-7 and on every Sunday:
    // June 7 (already counted), 14, 21 and 28. 02:00 CEST is 00:00Z.
    let calendar = calendar(
        "Europe/Berlin",
        vec![recurring("0 2 1-7 * SUN", 3600, None)],
        vec![],
    );
    let june_start = at("2026-05-31T22:00:00Z");
    let july_start = at("2026-06-30T22:00:00Z");
    let days: Vec<String> = calendar
        .windows_from(june_start, 40)
        .into_iter()
        .filter(|window| window.start_unix_s < july_start)
        .map(|window| utc(window.start_unix_s))
        .collect();
    let expected: Vec<String> = [1, 2, 3, 4, 5, 6, 7, 14, 21, 28]
        .iter()
        .map(|day| format!("2026-06-{day:02}T00:00:00Z"))
        .collect();
    assert_eq!(days, expected);
    assert_eq!(calendar.or_rule_windows(), vec![0]);
}

#[test]
fn never_firing_rejected_quickly() {
    for cron in ["0 2 30 2 *", "0 0 31 4 *"] {
        let started = Instant::now();
        let result = Calendar::new(&CalendarSpec {
            zone: "Europe/Berlin".into(),
            not_before_unix_s: at("2026-01-01T00:00:00Z"),
            expires_unix_s: at("2027-01-01T00:00:00Z"),
            windows: vec![recurring(cron, 3600, None)],
            freezes: vec![],
        });
        let elapsed = started.elapsed();
        let error = result.unwrap_err();
        assert!(
            matches!(
                error,
                WindowError::Cron {
                    index: 0,
                    source: CronError::NeverFires { .. }
                }
            ),
            "{cron}: {error}"
        );
        assert!(error.to_string().contains("never fires"), "{error}");
        assert!(elapsed.as_millis() < 100, "{cron} took {elapsed:?}");
    }
}

#[test]
fn leap_day_fires_in_2028() {
    // From 2026-06-01 the next 29 February is in 2028; 02:00 CET (+01) is 01:00Z.
    let calendar = calendar(
        "Europe/Berlin",
        vec![recurring("0 2 29 2 *", 3600, None)],
        vec![],
    );
    let from = at("2026-06-01T00:00:00Z");
    let started = Instant::now();
    let windows = calendar.windows_from(from, 1);
    assert_eq!(
        spans(&windows),
        vec!["2028-02-29T01:00:00Z–2028-02-29T02:00:00Z"]
    );
    assert_eq!(
        calendar.zone().format_local(windows[0].start_unix_s),
        "2028-02-29 02:00:00 CET (+01)"
    );
    assert_eq!(
        calendar.next_allowed(from),
        Some(at("2028-02-29T01:00:00Z"))
    );
    assert!(started.elapsed().as_millis() < 500);
}

#[test]
fn leap_day_across_2100_stays_bounded() {
    // 2100 is not a leap year, so the next 29 February after 2096 is in 2104.
    let calendar = Calendar::new(&CalendarSpec {
        zone: "UTC".into(),
        not_before_unix_s: at("2096-01-01T00:00:00Z"),
        expires_unix_s: at("2110-01-01T00:00:00Z"),
        windows: vec![recurring("0 0 29 2 *", 3600, None)],
        freezes: vec![],
    })
    .unwrap();
    assert_eq!(
        calendar.next_allowed(at("2096-03-01T00:00:00Z")),
        Some(at("2104-02-29T00:00:00Z"))
    );
}

#[test]
fn cutoff_ends_starts_early() {
    // Daily 02:00-04:00 UTC with a 30-minute cutoff: starts are allowed until 03:30.
    let calendar = calendar(
        "UTC",
        vec![recurring("0 2 * * *", 7200, Some(1800))],
        vec![],
    );
    let window = calendar.current_window(at("2026-06-01T03:45:00Z")).unwrap();
    assert_eq!(window.cutoff_unix_s, at("2026-06-01T03:30:00Z"));
    assert!(calendar.decide(at("2026-06-01T03:29:59Z")).is_allowed());
    let denied = calendar.decide(at("2026-06-01T03:30:00Z"));
    assert_eq!(
        denied,
        Decision::Denied {
            reason: DenyReason::PastCutoff { window },
            next_allowed_unix_s: Some(at("2026-06-02T02:00:00Z")),
        }
    );
}

#[test]
fn freeze_overrides_windows() {
    // Daily 02:00 UTC windows; a freeze from 2026-12-20 to 2027-01-04 covers 15 of them.
    let freeze = Freeze {
        start_unix_s: at("2026-12-20T00:00:00Z"),
        end_unix_s: at("2027-01-04T00:00:00Z"),
        reason: "year-end closing".into(),
    };
    let calendar = calendar(
        "UTC",
        vec![recurring("0 2 * * *", 3600, None)],
        vec![freeze.clone()],
    );
    let decision = calendar.decide(at("2026-12-24T02:30:00Z"));
    assert_eq!(
        decision,
        Decision::Denied {
            reason: DenyReason::Frozen { freeze },
            next_allowed_unix_s: Some(at("2027-01-04T02:00:00Z")),
        }
    );
    // A freeze that ends inside a window allows the rest of it.
    let calendar = calendar_with_freeze_until("2026-06-01T02:20:00Z");
    assert_eq!(
        calendar.next_allowed(at("2026-06-01T00:00:00Z")),
        Some(at("2026-06-01T02:20:00Z"))
    );
}

fn calendar_with_freeze_until(end: &str) -> Calendar {
    calendar(
        "UTC",
        vec![recurring("0 2 * * *", 3600, None)],
        vec![Freeze {
            start_unix_s: at("2026-05-31T00:00:00Z"),
            end_unix_s: at(end),
            reason: "plant audit".into(),
        }],
    )
}

#[test]
fn one_off_window_and_validity() {
    let calendar = Calendar::new(&CalendarSpec {
        zone: "UTC".into(),
        not_before_unix_s: at("2026-05-01T00:00:00Z"),
        expires_unix_s: at("2026-06-01T00:00:00Z"),
        windows: vec![WindowRule::Once {
            start_unix_s: at("2026-05-10T12:00:00Z"),
            end_unix_s: at("2026-05-10T14:00:00Z"),
            cutoff_s: None,
        }],
        freezes: vec![],
    })
    .unwrap();
    assert_eq!(
        calendar.decide(at("2026-04-01T00:00:00Z")),
        Decision::Denied {
            reason: DenyReason::NotYetValid {
                not_before_unix_s: at("2026-05-01T00:00:00Z")
            },
            next_allowed_unix_s: Some(at("2026-05-10T12:00:00Z")),
        }
    );
    assert!(calendar.decide(at("2026-05-10T13:00:00Z")).is_allowed());
    assert_eq!(calendar.next_allowed(at("2026-05-10T14:00:00Z")), None);
    assert_eq!(
        calendar.decide(at("2026-06-01T00:00:00Z")),
        Decision::Denied {
            reason: DenyReason::Expired {
                expires_unix_s: at("2026-06-01T00:00:00Z")
            },
            next_allowed_unix_s: None,
        }
    );
}

#[test]
fn expiry_ends_recurring_windows() {
    let calendar = Calendar::new(&CalendarSpec {
        zone: "UTC".into(),
        not_before_unix_s: at("2026-05-01T00:00:00Z"),
        expires_unix_s: at("2026-05-03T02:30:00Z"),
        windows: vec![recurring("0 2 * * *", 3600, None)],
        freezes: vec![],
    })
    .unwrap();
    assert_eq!(
        calendar.windows_from(at("2026-05-01T00:00:00Z"), 10).len(),
        3
    );
    // The window of 05-03 opened before expiry but no start is allowed from expiry on.
    assert!(calendar.decide(at("2026-05-03T02:29:59Z")).is_allowed());
    assert!(!calendar.decide(at("2026-05-03T02:30:00Z")).is_allowed());
    assert_eq!(calendar.next_allowed(at("2026-05-03T02:30:00Z")), None);
}

#[test]
fn invalid_specs_name_the_field() {
    let base = CalendarSpec {
        zone: "Europe/Berlin".into(),
        not_before_unix_s: at("2026-01-01T00:00:00Z"),
        expires_unix_s: at("2027-01-01T00:00:00Z"),
        windows: vec![recurring("0 2 * * *", 3600, None)],
        freezes: vec![],
    };
    let error_of = |change: &dyn Fn(&mut CalendarSpec)| {
        let mut spec = base.clone();
        change(&mut spec);
        Calendar::new(&spec).unwrap_err().to_string()
    };
    let error = error_of(&|spec| spec.zone = "+01:00".into());
    assert!(
        error.contains("\"+01:00\" is a fixed UTC offset"),
        "{error}"
    );
    let error = error_of(&|spec| spec.windows = vec![recurring("0 2 * * *", 3600, Some(3600))]);
    assert!(
        error.contains("window 0: the cutoff 1h is invalid"),
        "{error}"
    );
    let error = error_of(&|spec| spec.windows = vec![recurring("0 2 * * *", 8 * 86_400, None)]);
    assert!(error.contains("the duration 8d is invalid"), "{error}");
    let error = error_of(&|spec| spec.windows.clear());
    assert!(error.contains("no window"), "{error}");
    let error = error_of(&|spec| spec.expires_unix_s = spec.not_before_unix_s);
    assert!(error.contains("expires"), "{error}");
    let error = error_of(&|spec| {
        spec.freezes = vec![Freeze {
            start_unix_s: 10,
            end_unix_s: 10,
            reason: "audit".into(),
        }]
    });
    assert!(error.contains("freeze 0: the end"), "{error}");
    let error = error_of(&|spec| {
        spec.freezes = vec![Freeze {
            start_unix_s: 10,
            end_unix_s: 20,
            reason: " ".into(),
        }]
    });
    assert!(error.contains("freeze 0: the reason is empty"), "{error}");
}

#[test]
fn durations_parse_and_format() {
    assert_eq!(parse_duration("2h").unwrap().as_secs(), 7200);
    assert_eq!(parse_duration("45m").unwrap().as_secs(), 2700);
    assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
    assert_eq!(parse_duration("1d").unwrap().as_secs(), 86_400);
    assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
    for bad in ["", "2", "h", "2x", "2 h", "-1h", "99999999999999999999d"] {
        assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
    }
    assert_eq!(format_duration(5400), "1h30m");
    assert_eq!(format_duration(2700), "45m");
    assert_eq!(format_duration(90_061), "1d1h1m1s");
}

#[test]
fn extreme_instants_do_not_panic() {
    let calendar = calendar(
        "America/New_York",
        vec![recurring("*/5 * * * *", 600, Some(60))],
        vec![],
    );
    for instant in [i64::MIN, i64::MIN / 2, -1, 0, i64::MAX / 2, i64::MAX] {
        let _ = calendar.decide(instant);
        let _ = calendar.windows_from(instant, 5);
        let _ = calendar.next_allowed(instant);
        let _ = calendar.current_window(instant);
    }
}

const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Asia/Kolkata",
    "Pacific/Chatham",
];

fn arb_cron() -> impl Strategy<Value = String> {
    let minute = prop_oneof![
        (0u32..60).prop_map(|m| m.to_string()),
        (1u32..=30).prop_map(|s| format!("*/{s}")),
        (0u32..30, 30u32..60).prop_map(|(a, b)| format!("{a},{b}")),
    ];
    let hour = prop_oneof![
        (0u32..24).prop_map(|h| h.to_string()),
        (0u32..12, 12u32..24).prop_map(|(a, b)| format!("{a}-{b}")),
        (1u32..=12).prop_map(|s| format!("*/{s}")),
        Just("*".to_owned()),
    ];
    let day_of_month = prop_oneof![
        Just("*".to_owned()),
        (1u32..=28).prop_map(|d| d.to_string()),
        (1u32..=14, 15u32..=31).prop_map(|(a, b)| format!("{a}-{b}")),
    ];
    let month = prop_oneof![
        Just("*".to_owned()),
        (1u32..=12).prop_map(|m| m.to_string()),
        Just("MAR,OCT,NOV".to_owned()),
    ];
    let day_of_week = prop_oneof![
        Just("*".to_owned()),
        (0u32..=7).prop_map(|d| d.to_string()),
        Just("MON-FRI".to_owned()),
    ];
    (minute, hour, day_of_month, month, day_of_week)
        .prop_map(|(a, b, c, d, e)| format!("{a} {b} {c} {d} {e}"))
}

fn arb_calendar() -> impl Strategy<Value = (Calendar, i64)> {
    let rule = (arb_cron(), 60u32..=2 * 86_400, prop::option::of(1u32..3600)).prop_map(
        |(cron, duration_s, cutoff_s)| {
            let cutoff_s = cutoff_s.filter(|cutoff| *cutoff < duration_s);
            recurring(&cron, duration_s, cutoff_s)
        },
    );
    // 2026-01-01 to 2030-01-01.
    let base = at("2026-01-01T00:00:00Z");
    let span = 4 * 365 * 86_400;
    let freeze = (0..span, 60i64..20 * 86_400).prop_map(move |(offset, length)| Freeze {
        start_unix_s: base + offset,
        end_unix_s: base + offset + length,
        reason: "test freeze".into(),
    });
    (
        prop::sample::select(ZONES),
        prop::collection::vec(rule, 1..3),
        prop::collection::vec(freeze, 0..3),
        0..span,
    )
        .prop_map(move |(zone, windows, freezes, offset)| {
            let calendar = Calendar::new(&CalendarSpec {
                zone: zone.into(),
                not_before_unix_s: base,
                expires_unix_s: base + span + 86_400,
                windows,
                freezes,
            })
            .unwrap();
            (calendar, base + offset)
        })
}

fn frozen(calendar: &Calendar, unix_s: i64) -> bool {
    calendar
        .freezes_from(unix_s)
        .iter()
        .any(|f| f.start_unix_s <= unix_s && unix_s < f.end_unix_s)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn windows_sorted_and_well_formed((calendar, now) in arb_calendar()) {
        let windows = calendar.windows_from(now, 20);
        for pair in windows.windows(2) {
            prop_assert!(pair[0].start_unix_s <= pair[1].start_unix_s);
        }
        for window in &windows {
            prop_assert!(window.start_unix_s < window.end_unix_s);
            prop_assert!(window.start_unix_s < window.cutoff_unix_s);
            prop_assert!(window.cutoff_unix_s <= window.end_unix_s);
            prop_assert!(window.end_unix_s > now);
        }
    }

    #[test]
    fn windows_allow_at_start_not_at_end((calendar, now) in arb_calendar()) {
        for window in calendar.windows_from(now, 10) {
            let start = window.start_unix_s;
            if start >= calendar.not_before_unix_s() && !frozen(&calendar, start) {
                prop_assert!(calendar.decide(start).is_allowed(), "start {}", utc(start));
            }
            let end = window.end_unix_s;
            if calendar.decide(end).is_allowed() {
                let other = calendar.current_window(end);
                prop_assert!(
                    other.is_some_and(|other| other != window && other.allows_start(end)),
                    "end {} allowed without another window", utc(end)
                );
            }
        }
    }

    #[test]
    fn freezes_always_deny((calendar, now) in arb_calendar()) {
        for freeze in calendar.freezes_from(i64::MIN) {
            let middle = freeze.start_unix_s + (freeze.end_unix_s - freeze.start_unix_s) / 2;
            for instant in [freeze.start_unix_s, middle, freeze.end_unix_s - 1] {
                prop_assert!(!calendar.decide(instant).is_allowed());
            }
        }
        if let Some(next) = calendar.next_allowed(now) {
            prop_assert!(!frozen(&calendar, next));
        }
    }

    #[test]
    fn next_allowed_agrees_with_decide((calendar, now) in arb_calendar()) {
        let decision = calendar.decide(now);
        let next = calendar.next_allowed(now);
        match &decision {
            Decision::Allowed { window } => {
                prop_assert_eq!(next, Some(now));
                prop_assert!(window.allows_start(now));
            }
            Decision::Denied { next_allowed_unix_s, .. } => {
                prop_assert_eq!(*next_allowed_unix_s, next);
                prop_assert!(next.is_none_or(|next| next > now));
            }
        }
        if let Some(next) = next {
            prop_assert!(calendar.decide(next).is_allowed(), "next {}", utc(next));
            // One second earlier is denied, unless that is before the query.
            if next > now {
                prop_assert!(!calendar.decide(next - 1).is_allowed());
            }
        }
    }

    #[test]
    fn daily_windows_do_not_overlap(
        zone in prop::sample::select(ZONES),
        hour in 0u32..24,
        minute in 0u32..60,
        duration_s in 60u32..20 * 3600,
        offset in 0i64..4 * 365 * 86_400,
    ) {
        // Consecutive daily starts are at least 22 hours apart, even across a DST change of
        // up to two hours, so windows shorter than 20 hours never overlap.
        let calendar = calendar(zone, vec![recurring(&format!("{minute} {hour} * * *"), duration_s, None)], vec![]);
        let windows = calendar.windows_from(at("2026-01-01T00:00:00Z") + offset, 30);
        prop_assert_eq!(windows.len(), 30);
        for pair in windows.windows(2) {
            prop_assert!(pair[0].end_unix_s <= pair[1].start_unix_s);
        }
    }

    #[test]
    fn cron_parser_never_panics(text in "[0-9A-Za-z*/,\\- ]{0,40}") {
        let _ = CronExpr::parse(&text);
    }
}
