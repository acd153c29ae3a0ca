//! Rate limit for warnings about misbehaving peers (BAD-INPUT 22): a stranger hammering the peer
//! port must not be able to flood the log. At most one warning per key (a peer's IP address) per
//! interval; the warnings dropped in between are counted and reported with the next one.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Default interval between two warnings about the same key.
pub const DEFAULT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Keys remembered at once; beyond that, stale keys are pruned and, if none are stale, further
/// new keys share one bucket (a flood from many addresses still logs at most once per interval).
const MAX_KEYS: usize = 4096;
const OVERFLOW_KEY: &str = "<many peers>";

pub(crate) struct LogLimiter {
    interval: Duration,
    // A blocking lock: held for a map lookup only, never across an await.
    state: Mutex<State>,
}

struct State {
    keys: HashMap<String, Entry>,
    /// When stale keys were last pruned: a full map is pruned at most once a second, so a flood
    /// from many addresses costs a lookup per connection, not a scan.
    pruned_at: Option<Instant>,
}

struct Entry {
    last_logged: Instant,
    suppressed: u64,
}

impl LogLimiter {
    pub(crate) fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            interval,
            state: Mutex::new(State {
                keys: HashMap::new(),
                pruned_at: None,
            }),
        }
    }

    /// `Some(suppressed)` when a warning about `key` may be logged now (`suppressed` warnings were
    /// dropped since the last one); `None` when this one should be dropped.
    pub(crate) fn check(&self, key: &str) -> Option<u64> {
        self.check_at(key, Instant::now())
    }

    pub(crate) fn check_at(&self, key: &str, now: Instant) -> Option<u64> {
        let mut guard = self.state.lock();
        let State { keys, pruned_at } = &mut *guard;
        if !keys.contains_key(key)
            && keys.len() >= MAX_KEYS
            && pruned_at.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            let interval = self.interval;
            keys.retain(|_, e| now.duration_since(e.last_logged) < interval);
            *pruned_at = Some(now);
        }
        let key = if !keys.contains_key(key) && keys.len() >= MAX_KEYS {
            OVERFLOW_KEY
        } else {
            key
        };
        match keys.get_mut(key) {
            Some(e) if now.duration_since(e.last_logged) < self.interval => {
                e.suppressed += 1;
                None
            }
            Some(e) => {
                let suppressed = e.suppressed;
                e.last_logged = now;
                e.suppressed = 0;
                Some(suppressed)
            }
            None => {
                keys.insert(
                    key.to_string(),
                    Entry {
                        last_logged: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_interval_with_suppressed_count() {
        let l = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(l.check_at("1.2.3.4", t0), Some(0));
        assert_eq!(l.check_at("1.2.3.4", t0 + Duration::from_secs(1)), None);
        assert_eq!(l.check_at("1.2.3.4", t0 + Duration::from_secs(2)), None);
        assert_eq!(l.check_at("5.6.7.8", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(l.check_at("1.2.3.4", t0 + Duration::from_secs(11)), Some(2));
        assert_eq!(l.check_at("1.2.3.4", t0 + Duration::from_secs(12)), None);
    }

    #[test]
    fn many_keys_stay_bounded() {
        let l = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let logged = (0..3 * MAX_KEYS)
            .filter(|i| l.check_at(&format!("k{i}"), t0).is_some())
            .count();
        assert!(l.state.lock().keys.len() <= MAX_KEYS + 1);
        assert_eq!(logged, MAX_KEYS + 1);
        // Once they are stale, new keys get their own entries again.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(l.check_at("fresh", later), Some(0));
        assert!(l.state.lock().keys.len() <= 2);
    }
}
