//! The settings of a rollout as an operator gives them, their parsing from the CLI's and API's
//! text forms (`2`, `10%`, `30m`), and the split of the target agents into waves.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The size of one wave, counted from the first agent of the rollout: wave sizes are cumulative,
/// so `2,10%,50%,100%` reaches 2 agents, then a tenth, half and all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WaveSize {
    Count(u32),
    /// A share of the target agents in percent (1 to 100), rounded up to whole agents.
    Percent(u32),
}

/// How many failed agents stop a rollout: a count, or a share of the agents it was sent to so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureThreshold {
    Count(u32),
    /// A share in percent (1 to 100) of the agents the rollout has sent the bundle to, rounded
    /// up to whole agents.
    Percent(u32),
}

/// The action a rollout takes when its failure threshold is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureAction {
    /// Send the bundle to no further agent until an operator resumes the rollout.
    Pause,
    /// Send a rollback order to every agent that applied the bundle, and end the rollout.
    Revert,
}

/// An invalid rollout setting, naming the setting and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {setting} {value:?}: {reason}")]
pub struct InvalidSetting {
    pub setting: &'static str,
    pub value: String,
    pub reason: &'static str,
}

fn invalid(setting: &'static str, value: &str, reason: &'static str) -> InvalidSetting {
    InvalidSetting {
        setting,
        value: value.chars().take(80).collect(),
        reason,
    }
}

/// Parses `N` as a count or `N%` as a percentage from 1 to 100.
fn parse_count_or_percent(
    setting: &'static str,
    text: &str,
) -> Result<(u32, bool), InvalidSetting> {
    let trimmed = text.trim();
    if let Some(number) = trimmed.strip_suffix('%') {
        let percent: u32 = number.trim().parse().map_err(|_| {
            invalid(
                setting,
                text,
                "expected a number of agents or a share such as 10%",
            )
        })?;
        if !(1..=100).contains(&percent) {
            return Err(invalid(setting, text, "a share must be from 1% to 100%"));
        }
        return Ok((percent, true));
    }
    let count: u32 = trimmed.parse().map_err(|_| {
        invalid(
            setting,
            text,
            "expected a number of agents or a share such as 10%",
        )
    })?;
    if count == 0 {
        return Err(invalid(setting, text, "it must be at least 1"));
    }
    Ok((count, false))
}

impl FromStr for WaveSize {
    type Err = InvalidSetting;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (value, percent) = parse_count_or_percent("wave size", text)?;
        Ok(if percent {
            Self::Percent(value)
        } else {
            Self::Count(value)
        })
    }
}

impl fmt::Display for WaveSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count(count) => write!(f, "{count}"),
            Self::Percent(percent) => write!(f, "{percent}%"),
        }
    }
}

impl FromStr for FailureThreshold {
    type Err = InvalidSetting;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (value, percent) = parse_count_or_percent("failure threshold", text)?;
        Ok(if percent {
            Self::Percent(value)
        } else {
            Self::Count(value)
        })
    }
}

impl fmt::Display for FailureThreshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count(count) => write!(f, "{count}"),
            Self::Percent(percent) => write!(f, "{percent}%"),
        }
    }
}

impl FromStr for FailureAction {
    type Err = InvalidSetting;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "pause" => Ok(Self::Pause),
            "revert" => Ok(Self::Revert),
            _ => Err(invalid("failure action", text, "expected pause or revert")),
        }
    }
}

impl FailureThreshold {
    /// Returns the number of failures at which the action runs, when `sent` agents were sent the
    /// bundle.
    /// Never below 1, so a share of a small wave still needs one failure.
    pub fn failure_limit(self, sent: usize) -> usize {
        match self {
            Self::Count(count) => count as usize,
            Self::Percent(percent) => (sent * percent as usize).div_ceil(100).max(1),
        }
    }
}

/// Parses a comma-separated list of wave sizes such as `2,10%,50%,100%`.
pub fn parse_waves(text: &str) -> Result<Vec<WaveSize>, InvalidSetting> {
    if text.trim().is_empty() {
        return Err(invalid(
            "waves",
            text,
            "expected sizes such as 2,10%,50%,100%",
        ));
    }
    text.split(',').map(str::parse).collect()
}

/// Parses a duration such as `30m`, `90s`, `2h` or `1d` (a bare number is seconds) into seconds.
pub fn parse_duration_seconds(text: &str) -> Result<u64, InvalidSetting> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: u64 = number.parse().map_err(|_| {
        invalid(
            "duration",
            text,
            "expected a number with s, m, h or d, such as 30m",
        )
    })?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(invalid("duration", text, "the unit must be s, m, h or d")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| invalid("duration", text, "it is too long"))
}

/// Splits `total` agents into waves and returns the cumulative size of each: a canary wave of
/// `canary` agents (none when 0), then the given sizes. Sizes are clamped to `total`, a size not
/// above the one before is dropped, and a last wave reaching every agent is added when the sizes
/// stop short of it, so every target is in exactly one wave.
pub fn cumulative_wave_sizes(total: usize, canary: u32, waves: &[WaveSize]) -> Vec<usize> {
    let mut sizes: Vec<usize> = Vec::new();
    let mut push = |size: usize| {
        let size = size.min(total);
        if size > sizes.last().copied().unwrap_or(0) {
            sizes.push(size);
        }
    };
    push(canary as usize);
    for wave in waves {
        push(match *wave {
            WaveSize::Count(count) => count as usize,
            WaveSize::Percent(percent) => (total * percent as usize).div_ceil(100),
        });
    }
    push(total);
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_parse_counts_and_shares() {
        assert_eq!(
            parse_waves("2,10%, 50% ,100%").unwrap(),
            vec![
                WaveSize::Count(2),
                WaveSize::Percent(10),
                WaveSize::Percent(50),
                WaveSize::Percent(100)
            ]
        );
        assert!(parse_waves("").is_err());
        assert!(parse_waves("0").is_err());
        assert!(parse_waves("101%").is_err());
        assert_eq!(
            parse_waves("2,x").unwrap_err().to_string(),
            "invalid wave size \"x\": expected a number of agents or a share such as 10%"
        );
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration_seconds("30m"), Ok(1800));
        assert_eq!(parse_duration_seconds("2s"), Ok(2));
        assert_eq!(parse_duration_seconds("45"), Ok(45));
        assert_eq!(parse_duration_seconds("2h"), Ok(7200));
        assert_eq!(parse_duration_seconds("1d"), Ok(86_400));
        assert!(parse_duration_seconds("m").is_err());
        assert!(parse_duration_seconds("3w").is_err());
    }

    #[test]
    fn twenty_agents_split_into_three_waves() {
        // 2 canaries; 10% of 20 is 2, which adds nothing; 50% is 10; 100% is 20.
        let waves = parse_waves("2,10%,50%,100%").unwrap();
        assert_eq!(cumulative_wave_sizes(20, 2, &waves), vec![2, 10, 20]);
    }

    #[test]
    fn waves_end_with_every_agent() {
        assert_eq!(
            cumulative_wave_sizes(7, 1, &[WaveSize::Percent(50)]),
            vec![1, 4, 7]
        );
        assert_eq!(cumulative_wave_sizes(3, 5, &[]), vec![3]);
        assert_eq!(cumulative_wave_sizes(0, 2, &[]), Vec::<usize>::new());
    }

    #[test]
    fn share_threshold_rounds_up() {
        assert_eq!(FailureThreshold::Percent(10).failure_limit(2), 1);
        assert_eq!(FailureThreshold::Percent(10).failure_limit(20), 2);
        assert_eq!(FailureThreshold::Percent(10).failure_limit(21), 3);
        assert_eq!(FailureThreshold::Count(2).failure_limit(100), 2);
    }
}
