//! Priorities. Each priority has its own FIFO list; a claim drains higher lists first. Four
//! fixed levels keep claiming O(1) per job (no sorted-set scores to encode priority and order
//! together), which is what a backend team needs: urgent, interactive, default, bulk.

use std::str::FromStr;

use crate::queue::error::QueueError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Priority {
    Critical,
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    pub const COUNT: usize = 4;
    /// Highest first: the order claims drain the lists in.
    pub const ALL: [Priority; Self::COUNT] = [Self::Critical, Self::High, Self::Normal, Self::Low];

    /// 0 for the highest priority.
    pub fn rank(self) -> u8 {
        self as u8
    }

    pub fn from_rank(rank: u8) -> Option<Self> {
        Self::ALL.get(usize::from(rank)).copied()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }
}

impl FromStr for Priority {
    type Err = QueueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| QueueError::InvalidJob(format!("unknown priority {s:?}")))
    }
}
