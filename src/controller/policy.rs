//! Requeue policy: every interval the controllers wait comes from here, never from a literal in a reconciler.
//!
//! Azure deployments take 10–30 minutes and fine-tuning jobs hours, while ARM allows a subscription about
//! 25 reads a second: polls start fast (to notice quick failures), slow down as work ages, and are stretched
//! so the polling of all running jobs together stays inside a share of the read budget. Errors back off
//! per object, exponentially, with jitter; an Azure `Retry-After` always wins.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;

/// The intervals the controllers use, all multiplied by `scale` (1.0 against Azure; the emulator's
/// time-compressed demo and tests use a small scale).
#[derive(Clone, Debug)]
pub struct Policy {
    /// Multiplier applied to every interval.
    pub scale: f64,
    /// Steady-state resync of a resource that is done (GET-only drift check).
    pub resync: Duration,
    /// Workspace connection re-check.
    pub workspace_recheck: Duration,
    /// Poll of a job just submitted.
    pub job_poll_min: Duration,
    /// Longest poll interval of a running job.
    pub job_poll_max: Duration,
    /// Poll of a long-running Azure operation when Azure gives no `Retry-After`.
    pub operation_poll: Duration,
    /// Shortest wait honoured for a `Retry-After`, so a zero does not spin.
    pub retry_after_floor: Duration,
    /// Re-check of something we wait on outside Azure that no watch reports (a referenced resource not yet ready).
    pub dependency_wait: Duration,
    /// How long the connection settings read from a Workspace's Secrets are reused by its dependents.
    pub secret_reuse: Duration,
    /// First retry after an error; doubles per consecutive failure.
    pub backoff_base: Duration,
    /// Longest retry interval after errors.
    pub backoff_max: Duration,
    /// ARM reads a second the subscription refills (25 in Azure).
    pub arm_read_refill_per_sec: f64,
    /// Share of that refill rate job polling may use.
    pub poll_budget_share: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            scale: 1.0,
            resync: Duration::from_secs(600),
            workspace_recheck: Duration::from_secs(300),
            job_poll_min: Duration::from_secs(15),
            job_poll_max: Duration::from_secs(300),
            operation_poll: Duration::from_secs(15),
            retry_after_floor: Duration::from_secs(1),
            dependency_wait: Duration::from_secs(30),
            secret_reuse: Duration::from_secs(60),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            arm_read_refill_per_sec: 25.0,
            poll_budget_share: 0.4,
        }
    }
}

impl Policy {
    /// The same policy with every interval multiplied by `scale`.
    pub fn scaled(scale: f64) -> Self {
        Self { scale, ..Self::default() }
    }

    fn s(&self, d: Duration) -> Duration {
        d.mul_f64(self.scale.max(0.0))
    }

    pub fn resync(&self) -> Duration {
        self.s(self.resync)
    }

    pub fn workspace_recheck(&self) -> Duration {
        self.s(self.workspace_recheck)
    }

    pub fn dependency_wait(&self) -> Duration {
        self.s(self.dependency_wait)
    }

    pub fn secret_reuse(&self) -> Duration {
        self.s(self.secret_reuse)
    }

    /// Re-check of a resource waiting for its Workspace. The controllers watch Workspaces and wake the
    /// resources naming one when it changes, so this is only a safety net: at the resync interval, not
    /// `dependency_wait`, because thousands of resources waiting on one Workspace would otherwise fill
    /// the work queue with passes that find nothing new, and new resources would queue behind them.
    pub fn workspace_wait(&self) -> Duration {
        self.resync()
    }

    /// When to poll a long-running operation again: Azure's `Retry-After` if it gave one, else our default.
    pub fn operation_poll(&self, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            // Azure's own Retry-After is authoritative and already in Azure's time: never scaled.
            Some(r) => r.max(self.s(self.retry_after_floor)),
            None => self.s(self.operation_poll),
        }
    }

    /// When to poll a running job again.
    ///
    /// Starts at `job_poll_min`, grows with the job's age (a tenth of it) up to `job_poll_max`, and never
    /// goes below what keeps `running_jobs` polls inside `poll_budget_share` of the ARM read refill rate.
    pub fn job_poll(&self, age: Duration, running_jobs: usize) -> Duration {
        let by_age = (age / 10).clamp(self.job_poll_min, self.job_poll_max);
        let reads_per_sec = (self.arm_read_refill_per_sec * self.poll_budget_share).max(0.001);
        let by_budget = Duration::from_secs_f64(running_jobs as f64 / reads_per_sec);
        self.s(by_age.max(by_budget))
    }

    /// When to poll a job that was already running when the operator started, for the first time: a
    /// uniformly random point of its poll interval. A restart with thousands of running jobs then polls
    /// them at the steady-state rate instead of spending the subscription's whole read budget at once,
    /// and a job that ended meanwhile is still noticed within one poll interval.
    pub fn first_job_poll(&self, age: Duration, running_jobs: usize) -> Duration {
        self.job_poll(age, running_jobs).mul_f64(rand::rng().random_range(0.0..1.0))
    }

    /// Wait after the `failures`-th consecutive transient error (1-based), with ±20% jitter.
    pub fn backoff(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let exp = failures.saturating_sub(1).min(16);
        let base = self.backoff_base.saturating_mul(1u32 << exp).min(self.backoff_max);
        let jitter = rand::rng().random_range(0.8..=1.2);
        let wait = self.s(base.mul_f64(jitter));
        match retry_after {
            Some(r) => wait.max(r),
            None => wait,
        }
    }
}

/// Consecutive transient failures per object (by UID), so each object backs off on its own and a
/// success resets it. kube's controller has no per-object backoff of its own.
#[derive(Debug, Default)]
pub struct FailureCounter {
    counts: Mutex<HashMap<String, u32>>,
}

impl FailureCounter {
    /// Records one more failure and returns how many in a row.
    pub fn failed(&self, uid: &str) -> u32 {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(uid.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// Forgets the failures of an object after a successful pass.
    pub fn succeeded(&self, uid: &str) {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// A job just submitted is polled at the minimum interval so quick failures show up fast.
    #[test]
    fn fresh_job_polls_at_minimum() {
        assert_eq!(Policy::default().job_poll(secs(0), 1), secs(15));
    }

    /// Long-running jobs are polled less often, up to the maximum.
    #[test]
    fn old_job_polls_slower_up_to_maximum() {
        let p = Policy::default();
        assert_eq!(p.job_poll(secs(600), 1), secs(60));
        assert_eq!(p.job_poll(secs(36_000), 1), secs(300));
    }

    /// 10,000 running jobs must not use more than the budgeted share of ARM's 25 reads/s.
    #[test]
    fn many_jobs_stretch_polling_to_the_read_budget() {
        let p = Policy::default();
        let interval = p.job_poll(secs(0), 10_000);
        let reads_per_sec = 10_000.0 / interval.as_secs_f64();
        assert!(reads_per_sec <= 25.0 * 0.4 + 1e-9, "{reads_per_sec} reads/s");
    }

    /// After a start, 10,000 running jobs polled at random points of their interval average the
    /// steady-state rate: no burst spends the whole read budget.
    #[test]
    fn first_polls_after_a_start_are_spread_over_the_interval() {
        let p = Policy::default();
        let interval = p.job_poll(secs(3600), 10_000);
        let firsts: Vec<Duration> = (0..10_000).map(|_| p.first_job_poll(secs(3600), 10_000)).collect();
        assert!(firsts.iter().all(|d| *d <= interval));
        // In any tenth of the interval about a tenth of the jobs is polled (generous bound for chance).
        let tenth = interval / 10;
        for k in 0..10u32 {
            let n = firsts.iter().filter(|d| **d >= tenth * k && **d < tenth * (k + 1)).count();
            assert!((700..=1300).contains(&n), "{n} polls in tenth {k}");
        }
    }

    /// Retry-After from Azure wins over our default, but never below the floor.
    #[test]
    fn retry_after_wins_for_operations() {
        let p = Policy::default();
        assert_eq!(p.operation_poll(Some(secs(42))), secs(42));
        assert_eq!(p.operation_poll(Some(secs(0))), secs(1));
        assert_eq!(p.operation_poll(None), secs(15));
    }

    /// Backoff doubles per failure, is capped, and is jittered within ±20%.
    #[test]
    fn backoff_doubles_and_caps() {
        let p = Policy::default();
        for (n, nominal) in [(1, 5.0), (2, 10.0), (3, 20.0), (10, 300.0), (40, 300.0)] {
            let d = p.backoff(n, None).as_secs_f64();
            assert!(d >= nominal * 0.8 - 1e-9 && d <= nominal * 1.2 + 1e-9, "failure {n}: {d}");
        }
        assert!(p.backoff(1, Some(secs(60))) >= secs(60));
    }

    /// Scaling compresses our own intervals for the emulator's time-compressed runs.
    #[test]
    fn scale_applies_to_our_intervals() {
        let p = Policy::scaled(0.01);
        assert_eq!(p.resync(), Duration::from_secs(6));
        assert_eq!(p.job_poll(secs(0), 1), Duration::from_millis(150));
        assert_eq!(p.operation_poll(None), Duration::from_millis(150));
    }

    /// A Retry-After comes from Azure (or an emulator already running in compressed time): it is
    /// honoured as given, never scaled again.
    #[test]
    fn retry_after_is_never_scaled() {
        let p = Policy::scaled(0.01);
        assert_eq!(p.operation_poll(Some(secs(2))), secs(2));
        assert!(p.backoff(1, Some(secs(3))) >= secs(3));
    }

    #[test]
    fn failure_counter_counts_and_resets() {
        let c = FailureCounter::default();
        assert_eq!(c.failed("a"), 1);
        assert_eq!(c.failed("a"), 2);
        assert_eq!(c.failed("b"), 1);
        c.succeeded("a");
        assert_eq!(c.failed("a"), 1);
    }
}
