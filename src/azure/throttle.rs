//! Client-side token buckets that keep the operator inside ARM's request limits.
//!
//! ARM limits each subscription and principal with token buckets (reads 250 + 25/s, writes and
//! deletes 200 + 10/s). Waiting for a local token before sending means a busy operator slows down
//! instead of provoking 429s; the `x-ms-ratelimit-remaining-*` headers pull the local view down when
//! other clients share the same budget, and a 429's `Retry-After` closes the bucket until it passes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// The kind of ARM request, each with its own bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestClass {
    /// GET and HEAD.
    Read,
    /// PUT, PATCH and POST.
    Write,
    /// DELETE.
    Delete,
}

impl RequestClass {
    /// The class ARM counts a method against.
    pub fn of(method: &reqwest::Method) -> Self {
        match *method {
            reqwest::Method::GET | reqwest::Method::HEAD => RequestClass::Read,
            reqwest::Method::DELETE => RequestClass::Delete,
            _ => RequestClass::Write,
        }
    }

    /// Label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestClass::Read => "read",
            RequestClass::Write => "write",
            RequestClass::Delete => "delete",
        }
    }

    /// The `x-ms-ratelimit-remaining-subscription-*` header reporting this class's bucket.
    pub fn remaining_header(self) -> &'static str {
        match self {
            RequestClass::Read => "x-ms-ratelimit-remaining-subscription-reads",
            RequestClass::Write => "x-ms-ratelimit-remaining-subscription-writes",
            RequestClass::Delete => "x-ms-ratelimit-remaining-subscription-deletes",
        }
    }
}

/// Size and refill rate of one bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketLimits {
    /// Maximum burst.
    pub capacity: f64,
    /// Tokens added per second.
    pub refill_per_second: f64,
}

/// Bucket sizes per request class.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThrottleLimits {
    /// Reads.
    pub read: BucketLimits,
    /// Writes.
    pub write: BucketLimits,
    /// Deletes.
    pub delete: BucketLimits,
}

impl Default for ThrottleLimits {
    /// ARM's published per-subscription, per-principal limits.
    fn default() -> Self {
        Self {
            read: BucketLimits { capacity: 250.0, refill_per_second: 25.0 },
            write: BucketLimits { capacity: 200.0, refill_per_second: 10.0 },
            delete: BucketLimits { capacity: 200.0, refill_per_second: 10.0 },
        }
    }
}

impl ThrottleLimits {
    fn of(&self, class: RequestClass) -> BucketLimits {
        match class {
            RequestClass::Read => self.read,
            RequestClass::Write => self.write,
            RequestClass::Delete => self.delete,
        }
    }
}

/// One token bucket. Pure: every method takes the current instant, so the math is testable.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    limits: BucketLimits,
    tokens: f64,
    updated: Instant,
    closed_until: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limits: BucketLimits, now: Instant) -> Self {
        Self { limits, tokens: limits.capacity, updated: now, closed_until: None }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.limits.refill_per_second).min(self.limits.capacity);
        self.updated = now;
    }

    /// Takes a token if one is available (returns `None`), else returns how long to wait before
    /// trying again.
    pub fn try_take(&mut self, now: Instant) -> Option<Duration> {
        if let Some(until) = self.closed_until {
            if now < until {
                return Some(until - now);
            }
            self.closed_until = None;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return None;
        }
        let missing = 1.0 - self.tokens;
        let secs = if self.limits.refill_per_second > 0.0 {
            missing / self.limits.refill_per_second
        } else {
            // A zero refill rate would never refill; poll once a second rather than hang.
            1.0
        };
        Some(Duration::from_secs_f64(secs.max(0.001)))
    }

    /// Lowers the local count to what ARM reports as remaining (never raises it: the header may be
    /// stale, and other processes may share the budget).
    pub fn observe_remaining(&mut self, remaining: f64, now: Instant) {
        self.refill(now);
        if remaining < self.tokens {
            self.tokens = remaining.max(0.0);
        }
    }

    /// Closes the bucket until `now + retry_after` (a 429 says requests before then are refused).
    pub fn close_for(&mut self, retry_after: Duration, now: Instant) {
        let until = now + retry_after;
        if self.closed_until.is_none_or(|c| c < until) {
            self.closed_until = Some(until);
        }
        self.refill(now);
        self.tokens = 0.0;
    }

    /// Tokens available now (for tests and diagnostics).
    pub fn available(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }
}

/// The buckets of every subscription the operator talks to.
#[derive(Clone, Debug)]
pub struct Throttle {
    limits: ThrottleLimits,
    buckets: Arc<Mutex<HashMap<(String, RequestClass), TokenBucket>>>,
}

impl Throttle {
    /// Buckets with the given limits.
    pub fn new(limits: ThrottleLimits) -> Self {
        Self { limits, buckets: Arc::default() }
    }

    fn with_bucket<T>(
        &self,
        subscription: &str,
        class: RequestClass,
        f: impl FnOnce(&mut TokenBucket) -> T,
    ) -> T {
        let now = Instant::now();
        // A poisoned lock only means another task panicked mid-update; the counts are still usable.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets
            .entry((subscription.to_string(), class))
            .or_insert_with(|| TokenBucket::new(self.limits.of(class), now));
        f(bucket)
    }

    /// Waits until a token is available and takes it, returning how long it waited; gives up
    /// (without taking a token) when the next token is further away than `max_wait`, returning
    /// `Err(time until it is available)`: a long ARM back-off should requeue the reconcile rather
    /// than hold a worker.
    pub async fn acquire_within(
        &self,
        subscription: &str,
        class: RequestClass,
        max_wait: Duration,
    ) -> Result<Duration, Duration> {
        let start = Instant::now();
        loop {
            let wait = self.with_bucket(subscription, class, |b| b.try_take(Instant::now()));
            match wait {
                None => return Ok(start.elapsed()),
                Some(wait) if start.elapsed() + wait > max_wait => return Err(wait),
                Some(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Applies a `x-ms-ratelimit-remaining-*` value.
    pub fn observe_remaining(&self, subscription: &str, class: RequestClass, remaining: f64) {
        self.with_bucket(subscription, class, |b| b.observe_remaining(remaining, Instant::now()));
    }

    /// Applies a 429's `Retry-After`.
    pub fn close_for(&self, subscription: &str, class: RequestClass, retry_after: Duration) {
        self.with_bucket(subscription, class, |b| b.close_for(retry_after, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const LIMITS: BucketLimits = BucketLimits { capacity: 3.0, refill_per_second: 2.0 };

    #[test]
    fn full_bucket_serves_its_burst_then_asks_to_wait() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(LIMITS, t0);
        assert_eq!(b.try_take(t0), None);
        assert_eq!(b.try_take(t0), None);
        assert_eq!(b.try_take(t0), None);
        // Empty: one token takes 1 / 2 s to refill.
        assert_eq!(b.try_take(t0), Some(Duration::from_millis(500)));
    }

    #[test]
    fn refill_is_proportional_and_capped() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(LIMITS, t0);
        for _ in 0..3 {
            assert_eq!(b.try_take(t0), None);
        }
        assert!((b.available(t0 + Duration::from_millis(750)) - 1.5).abs() < 1e-9);
        assert!((b.available(t0 + Duration::from_secs(100)) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn remaining_header_only_lowers() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(LIMITS, t0);
        b.observe_remaining(1.0, t0);
        assert!((b.available(t0) - 1.0).abs() < 1e-9);
        b.observe_remaining(250.0, t0);
        assert!((b.available(t0) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn retry_after_closes_the_bucket() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(LIMITS, t0);
        b.close_for(Duration::from_secs(17), t0);
        assert_eq!(b.try_take(t0 + Duration::from_secs(2)), Some(Duration::from_secs(15)));
        // After the window the bucket has refilled for the time it was closed.
        assert_eq!(b.try_take(t0 + Duration::from_secs(17)), None);
    }

    #[test]
    fn arm_defaults_match_published_limits() {
        let l = ThrottleLimits::default();
        assert_eq!((l.read.capacity, l.read.refill_per_second), (250.0, 25.0));
        assert_eq!((l.write.capacity, l.write.refill_per_second), (200.0, 10.0));
        assert_eq!((l.delete.capacity, l.delete.refill_per_second), (200.0, 10.0));
    }

    #[test]
    fn classes_from_methods() {
        assert_eq!(RequestClass::of(&reqwest::Method::GET), RequestClass::Read);
        assert_eq!(RequestClass::of(&reqwest::Method::POST), RequestClass::Write);
        assert_eq!(RequestClass::of(&reqwest::Method::PUT), RequestClass::Write);
        assert_eq!(RequestClass::of(&reqwest::Method::DELETE), RequestClass::Delete);
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_for_refill() {
        let throttle = Throttle::new(ThrottleLimits {
            read: BucketLimits { capacity: 1.0, refill_per_second: 1.0 },
            ..ThrottleLimits::default()
        });
        assert_eq!(
            throttle.acquire_within("s", RequestClass::Read, HOUR).await.expect("token"),
            Duration::ZERO
        );
        let waited = throttle.acquire_within("s", RequestClass::Read, HOUR).await.expect("token");
        assert!(waited >= Duration::from_millis(999), "{waited:?}");
        // A wait beyond the allowed time is refused without taking the token.
        throttle.close_for("s", RequestClass::Read, Duration::from_secs(30));
        assert_eq!(
            throttle.acquire_within("s", RequestClass::Read, Duration::from_secs(5)).await,
            Err(Duration::from_secs(30))
        );
        // Other subscriptions and classes have their own buckets.
        assert_eq!(
            throttle.acquire_within("other", RequestClass::Read, HOUR).await.expect("token"),
            Duration::ZERO
        );
        assert_eq!(
            throttle.acquire_within("s", RequestClass::Write, HOUR).await.expect("token"),
            Duration::ZERO
        );
    }
}
