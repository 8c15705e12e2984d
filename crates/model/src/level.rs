//! QoS levels (openEuler's multi-priority model) and where each level lives under the tidal root.

use crate::path::GroupPath;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A workload's QoS level. Higher value = more important.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QosLevel {
    OfflineLow,
    Offline,
    Online,
    OnlineHigh,
    OnlineCritical,
}

/// Name of the shared parent group of all offline levels (it carries `cpu.idle=1`).
pub const OFFLINE_PARENT: &str = "offline";

impl QosLevel {
    /// All levels, most important first.
    pub const ALL: [QosLevel; 5] = [
        QosLevel::OnlineCritical,
        QosLevel::OnlineHigh,
        QosLevel::Online,
        QosLevel::Offline,
        QosLevel::OfflineLow,
    ];

    /// The offline levels, most important first.
    pub const OFFLINE: [QosLevel; 2] = [QosLevel::Offline, QosLevel::OfflineLow];

    pub fn name(self) -> &'static str {
        match self {
            QosLevel::OnlineCritical => "online-critical",
            QosLevel::OnlineHigh => "online-high",
            QosLevel::Online => "online",
            QosLevel::Offline => "offline",
            QosLevel::OfflineLow => "offline-low",
        }
    }

    /// The numeric level (openEuler `qos_level` scale).
    pub fn value(self) -> i8 {
        match self {
            QosLevel::OnlineCritical => 2,
            QosLevel::OnlineHigh => 1,
            QosLevel::Online => 0,
            QosLevel::Offline => -1,
            QosLevel::OfflineLow => -2,
        }
    }

    pub fn is_online(self) -> bool {
        self.value() >= 0
    }

    /// The level's group, relative to the tidal root. Offline levels share one parent group.
    pub fn group(self) -> &'static str {
        match self {
            QosLevel::OnlineCritical => "online-critical",
            QosLevel::OnlineHigh => "online-high",
            QosLevel::Online => "online",
            QosLevel::Offline => "offline/offline",
            QosLevel::OfflineLow => "offline/offline-low",
        }
    }

    /// The level's group as a checked path.
    pub fn group_path(self) -> GroupPath {
        GroupPath::trusted(self.group())
    }

    /// The shared parent of the offline levels.
    pub fn offline_parent() -> GroupPath {
        GroupPath::trusted(OFFLINE_PARENT)
    }

    /// Finds the level whose group is `path` (relative to the tidal root).
    pub fn from_group(path: &str) -> Option<QosLevel> {
        QosLevel::ALL.into_iter().find(|l| l.group() == path)
    }

    pub fn valid_list() -> String {
        QosLevel::ALL
            .iter()
            .map(|l| format!("{} ({})", l.name(), l.value()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for QosLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown QoS level '{given}'; valid levels: {valid}")]
pub struct UnknownLevel {
    pub given: String,
    pub valid: String,
}

impl FromStr for QosLevel {
    type Err = UnknownLevel;
    /// Accepts a level name or its number (`-1`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        QosLevel::ALL
            .into_iter()
            .find(|l| l.name() == t || t.parse::<i8>().ok() == Some(l.value()))
            .ok_or_else(|| UnknownLevel {
                given: s.to_string(),
                valid: QosLevel::valid_list(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_round_trip() {
        for l in QosLevel::ALL {
            assert_eq!(l.name().parse::<QosLevel>(), Ok(l));
            assert_eq!(l.value().to_string().parse::<QosLevel>(), Ok(l));
            assert_eq!(QosLevel::from_group(l.group()), Some(l));
        }
        assert_eq!("offline-low".parse::<QosLevel>().map(|l| l.value()), Ok(-2));
    }

    #[test]
    fn unknown_level_lists_valid_ones() {
        let e = "batch".parse::<QosLevel>().unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("'batch'"), "{msg}");
        for l in QosLevel::ALL {
            assert!(msg.contains(l.name()), "{msg}");
        }
    }

    #[test]
    fn ordering_follows_importance() {
        assert!(QosLevel::OnlineCritical > QosLevel::Online);
        assert!(QosLevel::Offline > QosLevel::OfflineLow);
        assert!(!QosLevel::Offline.is_online());
        assert!(QosLevel::Online.is_online());
    }
}
