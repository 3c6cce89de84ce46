//! The pause a retry loop takes between tries: doubling from a first pause up to a longest
//! one. Each loop keeps its own rule for when to stop; this only says how long to wait.

use std::time::Duration;

/// A doubling pause: `first`, then twice that, and so on, never longer than `max`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first.min(max),
        }
    }

    /// The pause to take now; the one after is twice as long, up to the longest.
    pub(crate) fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (pause * 2).min(self.max);
        pause
    }

    /// Sleeps the pause [`Backoff::next_pause`] gives.
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next_pause()).await;
    }

    /// Back to the first pause (after a try that succeeded).
    pub(crate) fn reset(&mut self) {
        self.next = self.first.min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_longest_and_start_over_on_reset() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(100), ms(500));
        let pauses: Vec<Duration> = (0..5).map(|_| backoff.next_pause()).collect();
        assert_eq!(pauses, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        backoff.reset();
        assert_eq!(backoff.next_pause(), ms(100));
        // A first pause over the longest is cut to it.
        assert_eq!(Backoff::new(ms(900), ms(500)).next_pause(), ms(500));
    }
}
