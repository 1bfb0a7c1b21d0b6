//! ARM's token-bucket request throttling, per subscription and principal and per kind of operation.

use std::collections::HashMap;
use std::time::Instant;

/// One token bucket: `capacity` requests at once, refilled at `refill_per_second`.
#[derive(Clone, Debug, PartialEq)]
pub struct BucketConfig {
    /// Burst size (tokens when full).
    pub capacity: u32,
    /// Tokens added per second.
    pub refill_per_second: f64,
}

/// The three ARM buckets (defaults are ARM's documented per-principal limits).
#[derive(Clone, Debug, PartialEq)]
pub struct ThrottleConfig {
    /// GET and HEAD.
    pub reads: BucketConfig,
    /// PUT, PATCH, POST.
    pub writes: BucketConfig,
    /// DELETE.
    pub deletes: BucketConfig,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            reads: BucketConfig { capacity: 250, refill_per_second: 25.0 },
            writes: BucketConfig { capacity: 200, refill_per_second: 10.0 },
            deletes: BucketConfig { capacity: 200, refill_per_second: 10.0 },
        }
    }
}

impl ThrottleConfig {
    pub(crate) fn check(&self) -> Result<(), String> {
        for (name, b) in [("reads", &self.reads), ("writes", &self.writes), ("deletes", &self.deletes)] {
            if b.capacity == 0 || !(b.refill_per_second.is_finite() && b.refill_per_second > 0.0) {
                return Err(format!("throttle bucket {name} needs a capacity > 0 and a refill rate > 0"));
            }
        }
        Ok(())
    }
}

/// The kind of an ARM request, which decides its bucket and rate-limit header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Reads,
    Writes,
    Deletes,
}

impl Kind {
    pub(crate) fn of(method: &axum::http::Method) -> Self {
        match *method {
            axum::http::Method::GET | axum::http::Method::HEAD => Kind::Reads,
            axum::http::Method::DELETE => Kind::Deletes,
            _ => Kind::Writes,
        }
    }

    /// The header carrying the remaining count, as ARM names it.
    pub(crate) fn header(self) -> &'static str {
        match self {
            Kind::Reads => "x-ms-ratelimit-remaining-subscription-reads",
            Kind::Writes => "x-ms-ratelimit-remaining-subscription-writes",
            Kind::Deletes => "x-ms-ratelimit-remaining-subscription-deletes",
        }
    }
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// All buckets.
pub(crate) struct Throttle {
    config: ThrottleConfig,
    buckets: HashMap<(String, String, Kind), Bucket>,
}

impl Throttle {
    pub(crate) fn new(config: ThrottleConfig) -> Self {
        Self { config, buckets: HashMap::new() }
    }

    pub(crate) fn reset(&mut self) {
        self.buckets.clear();
    }

    pub(crate) fn set_config(&mut self, config: ThrottleConfig) {
        self.config = config;
        self.buckets.clear();
    }

    pub(crate) fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    /// Takes one token: `Ok(remaining)` or `Err(retry_after_secs)` when the bucket is empty.
    pub(crate) fn take(&mut self, subscription: &str, principal: &str, kind: Kind) -> Result<u32, u64> {
        let limits = match kind {
            Kind::Reads => &self.config.reads,
            Kind::Writes => &self.config.writes,
            Kind::Deletes => &self.config.deletes,
        };
        let now = Instant::now();
        let key = (subscription.to_ascii_lowercase(), principal.to_string(), kind);
        let bucket =
            self.buckets.entry(key).or_insert(Bucket { tokens: f64::from(limits.capacity), updated: now });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * limits.refill_per_second).min(f64::from(limits.capacity));
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(bucket.tokens.floor() as u32)
        } else {
            let wait = (1.0 - bucket.tokens) / limits.refill_per_second;
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bucket lets its burst through, then refuses with a wait long enough to refill one token.
    #[test]
    fn empties_after_burst_and_names_a_wait() {
        let small = BucketConfig { capacity: 3, refill_per_second: 0.5 };
        let mut t =
            Throttle::new(ThrottleConfig { reads: small.clone(), writes: small.clone(), deletes: small });
        assert_eq!(t.take("s", "p", Kind::Reads), Ok(2));
        assert_eq!(t.take("s", "p", Kind::Reads), Ok(1));
        assert_eq!(t.take("s", "p", Kind::Reads), Ok(0));
        assert_eq!(t.take("s", "p", Kind::Reads), Err(2));
        // Other kinds and other principals have their own buckets.
        assert_eq!(t.take("s", "p", Kind::Writes), Ok(2));
        assert_eq!(t.take("s", "q", Kind::Reads), Ok(2));
    }
}
