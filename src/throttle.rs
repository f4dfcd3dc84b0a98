//! Rate limits for log lines that a fault would otherwise repeat for every request or message.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets one line through per interval and counts the ones it held back.
pub struct Throttle {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    /// At most one line per `every`.
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be logged now.
    pub fn allow(&self) -> Option<u64> {
        let mut state = self.state.lock().ok()?;
        let (last, held) = &mut *state;
        match last {
            Some(at) if at.elapsed() < self.every => {
                *held += 1;
                None
            }
            _ => {
                *last = Some(Instant::now());
                Some(std::mem::take(held))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_a_count_of_the_rest() {
        let t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.allow(), Some(0));
        for _ in 0..99 {
            assert_eq!(t.allow(), None);
        }
        let t = Throttle::new(Duration::ZERO);
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), Some(0));
    }
}
