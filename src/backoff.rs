//! Retry delays: one exponential backoff with jitter for every loop that waits on the control
//! service (node identity, start-up recovery, lease-release retries, the state poller).
//!
//! Jitter matters because every node of a cluster retries against the same control service: after
//! it restarts, a hundred plugins must not come back in the same millisecond. It does not sleep or
//! decide *whether* to retry; callers do.

use std::time::Duration;

/// Exponential backoff from `first` to `max`, each delay spread ±20% at random.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

/// Fraction by which each delay is spread either way.
const JITTER: f64 = 0.2;

impl Backoff {
    /// Starts at `first`, doubles after each delay, never above `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max: max.max(first),
            next: first,
        }
    }

    /// The delay to wait now; the following one will be twice as long (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let spread = 1.0 + JITTER * (2.0 * rand::random::<f64>() - 1.0);
        base.mul_f64(spread)
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum_within_the_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let bases = [100, 200, 400, 700, 700];
        for base in bases {
            let delay = backoff.next_delay().as_secs_f64() * 1000.0;
            let base = base as f64;
            assert!(
                (base * 0.8 - 1e-6..=base * 1.2 + 1e-6).contains(&delay),
                "{delay} ms is not within 20% of {base} ms"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(120));
    }

    #[test]
    fn jitter_spreads_retries_apart() {
        let delays: Vec<Duration> = (0..50)
            .map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_delay())
            .collect();
        let min = delays.iter().min().unwrap();
        let max = delays.iter().max().unwrap();
        assert!(
            *max - *min > Duration::from_millis(50),
            "50 nodes would retry within {:?} of each other",
            *max - *min
        );
    }
}
