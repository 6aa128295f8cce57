//! The retry schedule: when the next attempt is made, or that there is none.

use std::time::Duration;

use rand::Rng;

use crate::domain::Timestamp;
use crate::store::Outcome;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay before attempt `i + 2` (the first attempt is immediate).
    schedule: Vec<Duration>,
    max_retry_after: Duration,
}

impl RetryPolicy {
    /// Parses `5s,5m,30m` (units ms, s, m, h). An empty string means no retries.
    pub fn parse(text: &str, max_retry_after: Duration) -> anyhow::Result<Self> {
        // An empty schedule means no retries; an empty entry within one is a typo.
        let schedule = match text.trim() {
            "" => Vec::new(),
            text => text
                .split(',')
                .map(str::trim)
                .map(|s| match s {
                    "" => anyhow::bail!(
                        "POSTHORN_RETRY_SCHEDULE (--retry-schedule): an empty entry in {text:?}"
                    ),
                    s => humantime::parse_duration(s).map_err(|e| {
                        anyhow::anyhow!("POSTHORN_RETRY_SCHEDULE (--retry-schedule): {s:?}: {e}")
                    }),
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        };
        Ok(Self {
            schedule,
            max_retry_after,
        })
    }

    /// Attempts in all: the first and one per schedule entry.
    pub fn max_attempts(&self) -> u32 {
        self.schedule.len() as u32 + 1
    }

    /// What follows failed attempt number `attempt_no` (1-based). The scheduled delay
    /// gets ±10% jitter; a `Retry-After` the receiver sent is waited for at least, up to
    /// the cap.
    pub fn after_failure(
        &self,
        attempt_no: u32,
        retry_after: Option<Duration>,
        now: Timestamp,
    ) -> Outcome {
        let Some(base) = self.schedule.get(attempt_no.saturating_sub(1) as usize) else {
            return Outcome::Failed;
        };
        let jitter = rand::thread_rng().gen_range(0.9..=1.1);
        let mut delay = base.mul_f64(jitter);
        if let Some(asked) = retry_after {
            delay = delay.max(asked.min(self.max_retry_after));
        }
        Outcome::Retry {
            at: now.plus(delay),
        }
    }
}

/// A `Retry-After` value: whole seconds, or an HTTP date (how long until then).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_has_eight_attempts_then_fails() {
        let p = RetryPolicy::parse("5s,5m,30m,2h,5h,10h,10h", Duration::from_secs(3600))
            .expect("parses");
        assert_eq!(p.max_attempts(), 8);
        let now = Timestamp::from_millis(0);
        match p.after_failure(1, None, now) {
            Outcome::Retry { at } => assert!((4500..=5500).contains(&at.millis())),
            other => panic!("{other:?}"),
        }
        assert_eq!(p.after_failure(8, None, now), Outcome::Failed);
    }

    #[test]
    fn retry_after_is_honoured_within_the_cap() {
        let p = RetryPolicy::parse("1s", Duration::from_secs(60)).expect("parses");
        let now = Timestamp::from_millis(0);
        assert_eq!(
            p.after_failure(1, Some(Duration::from_secs(30)), now),
            Outcome::Retry {
                at: Timestamp::from_millis(30_000)
            }
        );
        assert_eq!(
            p.after_failure(1, Some(Duration::from_secs(999)), now),
            Outcome::Retry {
                at: Timestamp::from_millis(60_000)
            }
        );
    }

    #[test]
    fn bad_schedules_are_refused() {
        assert!(RetryPolicy::parse("5x", Duration::ZERO).is_err());
        assert!(RetryPolicy::parse("1s,,2s", Duration::ZERO).is_err());
        assert!(RetryPolicy::parse("1s,", Duration::ZERO).is_err());
        assert_eq!(
            RetryPolicy::parse(" 1s , 2s ", Duration::ZERO)
                .expect("a good schedule")
                .max_attempts(),
            3
        );
        assert_eq!(
            RetryPolicy::parse("", Duration::ZERO)
                .expect("a good schedule")
                .max_attempts(),
            1
        );
    }

    proptest::proptest! {
        /// Any text: a schedule or an error, never a panic; a schedule of valid
        /// durations always parses, with one attempt more than entries.
        #[test]
        fn any_schedule_text_parses_or_is_refused(text in "\\PC{0,40}") {
            let _ = RetryPolicy::parse(&text, Duration::ZERO);
        }

        #[test]
        fn a_list_of_durations_parses(secs in proptest::collection::vec(1u32..100_000, 1..10)) {
            let text = secs.iter().map(|s| format!("{s}s")).collect::<Vec<_>>().join(",");
            let policy = RetryPolicy::parse(&text, Duration::ZERO).expect("valid");
            proptest::prop_assert_eq!(policy.max_attempts() as usize, secs.len() + 1);
        }

        /// Retry-After: seconds are read exactly; anything else never panics.
        #[test]
        fn retry_after_reads_seconds_and_never_panics(secs: u32, text in "\\PC{0,40}") {
            proptest::prop_assert_eq!(
                parse_retry_after(&secs.to_string()),
                Some(Duration::from_secs(u64::from(secs)))
            );
            let _ = parse_retry_after(&text);
        }
    }
}
