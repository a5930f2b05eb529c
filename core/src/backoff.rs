//! How long to wait before reconnecting after a lost connection: 0.5 s,
//! doubling up to 30 s, each wait drawn between half and all of it (so
//! many devices cut at once do not come back at the same instant).

use std::time::Duration;

/// The first wait.
pub const FIRST: Duration = Duration::from_millis(500);

/// The longest wait.
pub const LONGEST: Duration = Duration::from_secs(30);

/// Exponential backoff with jitter; [`Backoff::reset`] once connected.
#[derive(Clone, Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST }
    }
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff::default()
    }

    /// The wait before the next attempt; the one after is twice as long.
    pub fn next_wait(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(LONGEST);
        // Without randomness (it never fails on supported platforms) the
        // full wait is still a wait.
        let random = getrandom::u32().unwrap_or(u32::MAX);
        let fraction = 0.5 + 0.5 * (f64::from(random) / f64::from(u32::MAX));
        ceiling.mul_f64(fraction)
    }

    /// Connected again: the next loss starts from the first wait.
    pub fn reset(&mut self) {
        self.next = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_the_longest_and_resets() {
        let mut backoff = Backoff::new();
        let mut ceiling = FIRST;
        for _ in 0..12 {
            let wait = backoff.next_wait();
            assert!(wait >= ceiling / 2 && wait <= ceiling, "{wait:?} outside {:?}..{ceiling:?}", ceiling / 2);
            ceiling = (ceiling * 2).min(LONGEST);
        }
        assert!(backoff.next_wait() >= LONGEST / 2);
        backoff.reset();
        assert!(backoff.next_wait() <= FIRST);
    }
}
