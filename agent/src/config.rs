//! The agent's configuration file: one TOML document with documented defaults.
//!
//! Every key has a default, so an empty file is a valid configuration. Unknown keys are rejected
//! with their name, so a misspelt key never silently falls back to its default. Names that hold a
//! quantity carry its unit (`interval_seconds`, `max_packet_size_bytes`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The default configuration file, with a comment on every key. `print-default-config` prints it,
/// and a test checks that it parses to [`Config::default`].
pub const DEFAULT_CONFIG_TOML: &str = r#"# tidegate-agent configuration. Every key is optional; the values below are the defaults.

# Directory the collectors read below: "/" on a real host, a fixture tree in tests.
root_dir = "/"

# Directory for the agent's own state: its key pair, the outbox of unsent reports, the pinned
# trust root and the high-water mark of every bundle stream.
state_dir = "/var/lib/tidegate-agent"

# The tier this host belongs to. It picks how many signatures a bundle needs (the trust root may
# ask more for some tiers), so it is set here on the host and never taken from the server.
tier = "default"

# The site within the tier, for a site's own window schedule, which replaces the tier's at that
# site. Empty: the host follows its tier's schedule.
site = ""

# The signed trust root to pin at enrolment, read once when no root is pinned yet. Empty: none,
# and every bundle is rejected until a root is pinned.
trust_root_file = ""

[mqtt]
# The broker the server listens on: mqtt://HOST:PORT (port 1884 when omitted, the embedded broker's).
broker_url = "mqtt://127.0.0.1:1884"
# Seconds between keep-alive pings; the broker publishes the agent's last will after 1.5 times this.
keep_alive_seconds = 30
# Largest packet the agent sends. Larger reports are split into parts of at most this size.
# rumqttc's own default is 10 KiB, smaller than one inventory, so this is set on purpose.
max_packet_size_bytes = 131072
# Largest packet the agent accepts from the broker (orders).
max_incoming_packet_size_bytes = 1048576
# Seconds to wait for the TCP connection and the broker's CONNACK.
connect_timeout_seconds = 10
# Reconnect back-off: the first delay, doubled after every failed attempt up to the maximum,
# with random jitter. A connection must stay up for stable_connection_seconds to reset it.
reconnect_initial_delay_seconds = 1
reconnect_max_delay_seconds = 60
stable_connection_seconds = 30

[reports]
# Seconds between two reports. A report is a delta against the previous one unless a full one is due.
interval_seconds = 60
# Seconds between two full reports. A full report is also sent at start and on a resync order.
full_report_interval_seconds = 21600
# Seconds to wait for the server to confirm it stored a report before sending it again.
# The broker's PUBACK is not enough: a broker restart or a server that is not subscribed loses it.
ack_timeout_seconds = 60
# Stop producing reports after this many (0: no limit). The agent keeps running, delivering what is
# queued and following orders. For tests and measurements, which need a known number of reports.
max_reports = 0

[windows]
# A verified bundle starts only inside a maintenance window of a schedule that OT keys signed for
# this host's tier (or site). With require_schedule = false, a host that has received no schedule
# at all starts bundles at once; a schedule, once received, is always enforced. Keep true on OT
# gateways.
require_schedule = true

[clock]
# Refuse to start changes while the operating system reports the clock as not synchronised to a
# time source (on Linux: the kernel's adjtimex state, which chrony, ntpd and systemd-timesyncd keep).
# Set it to false only on hosts whose clock is kept by other means (a VM's host clock, say), because
# windows and expiry are then only as right as the clock.
require_os_synchronised = true

[outbox]
# Maximum number of queued messages kept on disk while the broker is unreachable. When it is
# reached, the oldest are dropped; the count of dropped messages travels in the next report.
max_messages = 2000
"#;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub root_dir: PathBuf,
    pub state_dir: PathBuf,
    pub tier: String,
    pub site: String,
    pub trust_root_file: PathBuf,
    pub mqtt: MqttConfig,
    pub reports: ReportsConfig,
    pub windows: WindowsConfig,
    pub clock: ClockConfig,
    pub outbox: OutboxConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    pub broker_url: String,
    pub keep_alive_seconds: u64,
    pub max_packet_size_bytes: usize,
    pub max_incoming_packet_size_bytes: usize,
    pub connect_timeout_seconds: u64,
    pub reconnect_initial_delay_seconds: f64,
    pub reconnect_max_delay_seconds: f64,
    pub stable_connection_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportsConfig {
    pub interval_seconds: f64,
    pub full_report_interval_seconds: u64,
    pub ack_timeout_seconds: f64,
    pub max_reports: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowsConfig {
    pub require_schedule: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClockConfig {
    pub require_os_synchronised: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    pub max_messages: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            root_dir: PathBuf::from("/"),
            state_dir: PathBuf::from("/var/lib/tidegate-agent"),
            tier: "default".into(),
            site: String::new(),
            trust_root_file: PathBuf::new(),
            mqtt: MqttConfig::default(),
            reports: ReportsConfig::default(),
            windows: WindowsConfig::default(),
            clock: ClockConfig::default(),
            outbox: OutboxConfig::default(),
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            broker_url: "mqtt://127.0.0.1:1884".into(),
            keep_alive_seconds: 30,
            max_packet_size_bytes: 128 * 1024,
            max_incoming_packet_size_bytes: 1024 * 1024,
            connect_timeout_seconds: 10,
            reconnect_initial_delay_seconds: 1.0,
            reconnect_max_delay_seconds: 60.0,
            stable_connection_seconds: 30,
        }
    }
}

impl Default for ReportsConfig {
    fn default() -> Self {
        Self {
            interval_seconds: 60.0,
            full_report_interval_seconds: 6 * 3600,
            ack_timeout_seconds: 60.0,
            max_reports: 0,
        }
    }
}

impl Default for WindowsConfig {
    fn default() -> Self {
        Self {
            require_schedule: true,
        }
    }
}

impl Default for ClockConfig {
    fn default() -> Self {
        Self {
            require_os_synchronised: true,
        }
    }
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self { max_messages: 2000 }
    }
}

/// The smallest packet limit the agent accepts: below it, the fixed part of a report chunk
/// (topic, ids, framing) would leave too little room for data.
pub const MIN_PACKET_SIZE_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration file {path}: {key} {problem}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        problem: String,
    },
}

/// A broker address taken from `mqtt.broker_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks configuration text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.to_owned(),
            message: error.to_string().trim_end().replace('\n', " "),
        })?;
        config.check(path)?;
        Ok(config)
    }

    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, problem: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            problem,
        };
        tidegate_protocol::trust::StreamName::parse(&self.tier)
            .map_err(|error| invalid("tier", format!("is invalid: {}", error.reason)))?;
        if !self.site.is_empty() {
            tidegate_protocol::trust::StreamName::parse(&self.site)
                .map_err(|error| invalid("site", format!("is invalid: {}", error.reason)))?;
        }
        parse_broker_url(&self.mqtt.broker_url)
            .map_err(|problem| invalid("mqtt.broker_url", problem))?;
        if self.mqtt.max_packet_size_bytes < MIN_PACKET_SIZE_BYTES {
            return Err(invalid(
                "mqtt.max_packet_size_bytes",
                format!(
                    "is {}, below the minimum of {MIN_PACKET_SIZE_BYTES}",
                    self.mqtt.max_packet_size_bytes
                ),
            ));
        }
        if self.mqtt.max_incoming_packet_size_bytes < MIN_PACKET_SIZE_BYTES {
            return Err(invalid(
                "mqtt.max_incoming_packet_size_bytes",
                format!("is below the minimum of {MIN_PACKET_SIZE_BYTES}"),
            ));
        }
        if !(self.mqtt.keep_alive_seconds >= 5 && self.mqtt.keep_alive_seconds <= 65_535) {
            return Err(invalid(
                "mqtt.keep_alive_seconds",
                "must be between 5 and 65535".into(),
            ));
        }
        let initial = self.mqtt.reconnect_initial_delay_seconds;
        let max = self.mqtt.reconnect_max_delay_seconds;
        if !(initial.is_finite() && initial > 0.0 && max.is_finite() && max >= initial) {
            return Err(invalid(
                "mqtt.reconnect_max_delay_seconds",
                format!("must be at least reconnect_initial_delay_seconds, which must be above 0 (got {initial} and {max})"),
            ));
        }
        let interval = self.reports.interval_seconds;
        if !(interval.is_finite() && interval >= 0.1) {
            return Err(invalid(
                "reports.interval_seconds",
                format!("is {interval}, expected at least 0.1"),
            ));
        }
        let ack_timeout = self.reports.ack_timeout_seconds;
        if !(ack_timeout.is_finite() && ack_timeout >= 0.5) {
            return Err(invalid(
                "reports.ack_timeout_seconds",
                format!("is {ack_timeout}, expected at least 0.5"),
            ));
        }
        if self.outbox.max_messages == 0 {
            return Err(invalid("outbox.max_messages", "must be at least 1".into()));
        }
        Ok(())
    }

    pub fn broker_address(&self) -> BrokerAddress {
        parse_broker_url(&self.mqtt.broker_url).expect("checked when the configuration was loaded")
    }

    pub fn report_interval(&self) -> Duration {
        Duration::from_secs_f64(self.reports.interval_seconds)
    }
}

/// Parses `mqtt://HOST[:PORT]`. TLS (`mqtts://`) is not supported yet, and is rejected by name.
pub fn parse_broker_url(url: &str) -> Result<BrokerAddress, String> {
    let rest = url.strip_prefix("mqtt://").ok_or_else(|| {
        format!("{url:?} is not supported: expected mqtt://HOST:PORT (mqtts:// and websockets are not supported yet)")
    })?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|port| *port != 0)
                .ok_or_else(|| format!("{url:?} has an invalid port {port:?}"))?;
            (host, port)
        }
        _ => (rest, 1884),
    };
    if host.contains('@') {
        return Err(format!(
            "{:?} carries credentials, which are not supported yet: give mqtt://HOST:PORT",
            url.split('@')
                .next_back()
                .map(|rest| format!("mqtt://…@{rest}"))
                .unwrap_or_default()
        ));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains('/') {
        return Err(format!("{url:?} has no valid host"));
    }
    Ok(BrokerAddress {
        host: host.to_owned(),
        port,
    })
}

impl Config {
    /// The site, or `None` when the host follows its tier's schedule.
    pub fn site(&self) -> Option<&str> {
        (!self.site.is_empty()).then_some(self.site.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("agent.toml"))
    }

    #[test]
    fn default_text_matches_default_values() {
        assert_eq!(parse(DEFAULT_CONFIG_TOML).unwrap(), Config::default());
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let error = parse("[reports]\ninterval_secs = 5\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("interval_secs"), "{error}");
        assert!(error.contains("agent.toml"), "{error}");
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let error = parse("rootdir = \"/\"\n").unwrap_err().to_string();
        assert!(error.contains("rootdir"), "{error}");
    }

    #[test]
    fn wrong_type_is_rejected() {
        let error = parse("[outbox]\nmax_messages = \"many\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("max_messages"), "{error}");
    }

    #[test]
    fn small_packet_limit_is_rejected() {
        let error = parse("[mqtt]\nmax_packet_size_bytes = 100\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("mqtt.max_packet_size_bytes is 100"),
            "{error}"
        );
    }

    #[test]
    fn broker_urls() {
        assert_eq!(
            parse_broker_url("mqtt://broker.example:1883").unwrap(),
            BrokerAddress {
                host: "broker.example".into(),
                port: 1883
            }
        );
        assert_eq!(parse_broker_url("mqtt://10.1.2.3").unwrap().port, 1884);
        assert_eq!(parse_broker_url("mqtt://[::1]:1999").unwrap().host, "::1");
        assert!(parse_broker_url("mqtts://h:8883")
            .unwrap_err()
            .contains("not supported"));
        assert!(parse_broker_url("mqtt://h:0")
            .unwrap_err()
            .contains("invalid port"));
        assert!(parse_broker_url("mqtt://h:99999").is_err());
        assert!(parse_broker_url("mqtt://").is_err());
        let credentials = parse_broker_url("mqtt://user:secret@h:1883").unwrap_err();
        assert!(credentials.contains("credentials"), "{credentials}");
        assert!(
            !credentials.contains("secret"),
            "the password is never echoed: {credentials}"
        );
    }
}
