//! MQTT topic names. Topics are versioned and per agent, so a broker ACL can pin each agent to its
//! own subtree.

use crate::ids::AgentId;

pub const PREFIX: &str = "tidegate/v1/agent";

/// Which of an agent's topics a message travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// Agent to server: reports and report chunks.
    Report,
    /// Agent to server: step and bundle progress.
    Event,
    /// Agent to server: retained online or offline status, with a last will.
    Status,
    /// Server to agent: orders. Never retained.
    Order,
}

impl TopicKind {
    fn suffix(self) -> &'static str {
        match self {
            Self::Report => "report",
            Self::Event => "event",
            Self::Status => "status",
            Self::Order => "order",
        }
    }

    /// The filter that matches this topic for every agent, for the server's subscriptions.
    pub fn all_agents_filter(self) -> String {
        format!("{PREFIX}/+/{}", self.suffix())
    }
}

/// The topic of one kind for one agent, for example `tidegate/v1/agent/{id}/report`.
pub fn topic(agent: &AgentId, kind: TopicKind) -> String {
    format!("{PREFIX}/{agent}/{}", kind.suffix())
}

/// Splits a concrete topic into the agent id and topic kind, or returns `None` for a topic outside
/// this scheme.
pub fn parse_topic(topic: &str) -> Option<(AgentId, TopicKind)> {
    let rest = topic.strip_prefix(PREFIX)?.strip_prefix('/')?;
    let (agent, suffix) = rest.split_once('/')?;
    let kind = match suffix {
        "report" => TopicKind::Report,
        "event" => TopicKind::Event,
        "status" => TopicKind::Status,
        "order" => TopicKind::Order,
        _ => return None,
    };
    Some((AgentId::parse(agent).ok()?, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_round_trip() {
        let agent = AgentId::parse("abc123").unwrap();
        let name = topic(&agent, TopicKind::Order);
        assert_eq!(name, "tidegate/v1/agent/abc123/order");
        assert_eq!(parse_topic(&name), Some((agent, TopicKind::Order)));
    }

    #[test]
    fn foreign_topics_are_not_parsed() {
        assert_eq!(parse_topic("tidegate/v2/agent/abc/report"), None);
        assert_eq!(parse_topic("tidegate/v1/agent/abc/report/extra"), None);
        assert_eq!(parse_topic("tidegate/v1/agent/ABC/report"), None);
    }

    #[test]
    fn filter_uses_single_level_wildcard() {
        assert_eq!(
            TopicKind::Status.all_agents_filter(),
            "tidegate/v1/agent/+/status"
        );
    }
}
