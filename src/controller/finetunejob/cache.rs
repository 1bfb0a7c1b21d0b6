//! Short-lived, shared answers to the ARM reads every FineTuneJob's validation repeats (its compute
//! cluster, the location's VM sizes), so N jobs applied at once cost about one read each instead of
//! three: ARM allows a subscription 25 reads a second, and these answers change rarely.
//!
//! Lookups are single-flight: concurrent misses for the same key wait for one fetch instead of
//! sending one request each (what a thousand jobs applied together would otherwise do). Errors are
//! never cached.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// One key's slot: its async lock serializes fetches, the value is the last good answer.
type Slot<V> = Arc<tokio::sync::Mutex<Option<(Instant, V)>>>;

/// A map from `K` to values that expire `ttl` after they were fetched.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    slots: Mutex<HashMap<K, Slot<V>>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// An empty cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, slots: Mutex::new(HashMap::new()) }
    }

    /// The cached value of `key` if it is younger than the TTL; else the result of `fetch`, which is
    /// stored when it is `Ok` and `keep` accepts it. Concurrent callers for one key wait for a single
    /// fetch.
    pub async fn get_or_fetch<E>(
        &self,
        key: &K,
        keep: impl Fn(&V) -> bool,
        fetch: impl AsyncFnOnce() -> Result<V, E>,
    ) -> Result<V, E> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.entry(key.clone()).or_default().clone()
        };
        let mut entry = slot.lock().await;
        if let Some((at, value)) = entry.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(value.clone());
        }
        let value = fetch().await?;
        *entry = keep(&value).then(|| (Instant::now(), value.clone()));
        Ok(value)
    }

    /// Forgets `key`, so the next lookup reads Azure again (after we changed the resource ourselves).
    pub fn invalidate(&self, key: &K) {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    async fn counted(cache: &TtlCache<&'static str, u32>, calls: &AtomicUsize, value: u32) -> u32 {
        cache
            .get_or_fetch(
                &"k",
                |_| true,
                async || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, ()>(value)
                },
            )
            .await
            .expect("fetch")
    }

    /// Within the TTL the first answer is reused; after it, Azure is read again.
    #[tokio::test(start_paused = true)]
    async fn reuses_a_value_until_it_expires() {
        let cache = TtlCache::new(Duration::from_secs(60));
        let calls = AtomicUsize::new(0);
        assert_eq!(counted(&cache, &calls, 1).await, 1);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(counted(&cache, &calls, 2).await, 1);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(counted(&cache, &calls, 3).await, 3);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// A thousand concurrent misses make one request, not a thousand.
    #[tokio::test]
    async fn concurrent_misses_fetch_once() {
        let cache = Arc::new(TtlCache::new(Duration::from_secs(60)));
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let (cache, calls) = (cache.clone(), calls.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_fetch(
                            &"compute",
                            |_| true,
                            async || {
                                calls.fetch_add(1, Ordering::SeqCst);
                                tokio::task::yield_now().await;
                                Ok::<_, ()>(7u32)
                            },
                        )
                        .await
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.expect("task"), Ok(7));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// Errors and values `keep` refuses (a cluster still provisioning) are read again next time.
    #[tokio::test]
    async fn errors_and_refused_values_are_not_kept() {
        let cache: TtlCache<&str, u32> = TtlCache::new(Duration::from_secs(60));
        let calls = AtomicUsize::new(0);
        let fail = cache
            .get_or_fetch(
                &"k",
                |_| true,
                async || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err::<u32, _>("throttled")
                },
            )
            .await;
        assert_eq!(fail, Err("throttled"));
        for expected_calls in [2, 3] {
            let v = cache
                .get_or_fetch(
                    &"k",
                    |v| *v != 0,
                    async || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, ()>(0)
                    },
                )
                .await;
            assert_eq!(v, Ok(0));
            assert_eq!(calls.load(Ordering::SeqCst), expected_calls);
        }
    }

    /// Invalidation forces a fresh read inside the TTL.
    #[tokio::test]
    async fn invalidate_forces_a_read() {
        let cache = TtlCache::new(Duration::from_secs(60));
        let calls = AtomicUsize::new(0);
        counted(&cache, &calls, 1).await;
        cache.invalidate(&"k");
        assert_eq!(counted(&cache, &calls, 2).await, 2);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
