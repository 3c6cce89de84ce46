//! Where a node reads the time ([`Clock`]) and draws randomness (`Entropy`, from `cairn_plan`,
//! which needs no clock), both passed in through `NodeConfig`. Everything below the runtime (the state machine, the executor)
//! receives time and seeds as arguments; this is where they come from. A production node reads
//! the system clock and the operating system's randomness; the simulator runs every node on
//! tokio's paused clock and one seeded source, so a seed replays exactly.

pub use cairn_plan::entropy::Entropy;

/// The wall clock of a node.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// Virtual time: `start_unix_ms` plus what tokio's clock has advanced since `origin`. On a
    /// runtime with paused time (the simulator's) it moves only when every task waits, by
    /// exactly as much as the next timer needs; it never reads the system clock.
    Virtual {
        start_unix_ms: u64,
        origin: tokio::time::Instant,
    },
}

impl Clock {
    /// Virtual time starting now at `start_unix_ms` (call it inside the runtime whose clock
    /// it follows).
    pub fn virtual_from(start_unix_ms: u64) -> Self {
        Self::Virtual {
            start_unix_ms,
            origin: tokio::time::Instant::now(),
        }
    }

    /// Milliseconds since the Unix epoch (0 if the system clock is before it).
    pub fn now_ms(&self) -> u64 {
        match self {
            Self::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            Self::Virtual {
                start_unix_ms,
                origin,
            } => {
                let elapsed = tokio::time::Instant::now().saturating_duration_since(*origin);
                start_unix_ms + u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
            }
        }
    }

    /// Whether this is virtual time (the node then runs every task on its caller's runtime).
    pub fn is_virtual(&self) -> bool {
        matches!(self, Self::Virtual { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn virtual_time_moves_with_tokio_clock_only() {
        let clock = Clock::virtual_from(5_000);
        assert_eq!(clock.now_ms(), 5_000);
        tokio::time::sleep(std::time::Duration::from_millis(1_234)).await;
        assert_eq!(clock.now_ms(), 6_234);
    }
}
