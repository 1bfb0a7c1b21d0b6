//! Kubernetes Events (`events.k8s.io/v1`) written in the background, with repeats folded into a series,
//! in bounded memory.
//!
//! Reconcilers hand an Event to a bounded queue and go on, as client-go's recorder does: a new
//! FineTuneJob reports four Events before its job is submitted, and waiting for each of them put four API
//! round trips between the resource's creation and its first Azure request. A few writers drain the queue.
//! When it is full (a bulk apply of thousands of resources outruns the API server's Event writes) new
//! Events are dropped and counted, as client-go drops them: waiting would tie every reconcile to the pace
//! of Event writes, and status conditions, not Events, are the record of what happened. The time of an
//! Event is taken when it is sent, so Events written out of order still read in order.
//!
//! kube's `Recorder` keeps every Event it published for six minutes, whole, to fold repeats; a bulk apply
//! of 10,000 resources (two Events each) made that cache the largest thing the operator held. The
//! controllers publish only on transitions, so repeats are rare: this publisher remembers just the name
//! and count of recent Events, for a bounded number of them, and forgets the oldest first.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// How long a published Event can still be continued as a series (what kube's recorder uses too).
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// Most Events remembered for series; past it the oldest is forgotten (its next repeat starts a new Event).
const MAX_REMEMBERED: usize = 1024;

/// Events waiting to be written; past it new ones are dropped.
const QUEUE: usize = 1024;

/// Events written at once.
const WRITERS: usize = 8;

/// What is kept of a published Event: enough to continue its series.
#[derive(Clone, Debug)]
struct Recent {
    name: String,
    count: i32,
    last: Timestamp,
}

/// An Event waiting to be written, and when it was sent.
struct Pending {
    event: Event,
    regarding: ObjectReference,
    at: Timestamp,
}

/// Work for the background writers.
enum Job {
    Write(Box<Pending>),
    /// Answered once everything sent before it is written.
    Flush(oneshot::Sender<()>),
}

/// Sends Events for the operator's resources to the background writers.
#[derive(Clone)]
pub struct EventPublisher {
    queue: mpsc::Sender<Job>,
    /// Events dropped since the last one queued.
    dropped: Arc<AtomicU64>,
}

impl EventPublisher {
    /// A publisher reporting as `reporter`; its writers run on the current tokio runtime until every
    /// clone of the publisher is dropped.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let writer = Arc::new(EventWriter { client, reporter, recent: Mutex::default() });
        tokio::spawn(drain(writer, jobs));
        Self { queue, dropped: Arc::default() }
    }

    /// Queues an Event about `regarding`, or drops it when the queue is full. Never waits; failures to
    /// write are logged, not returned: Events are informative.
    pub fn send(&self, event: Event, regarding: ObjectReference) {
        let job = Job::Write(Box::new(Pending { event, regarding, at: Timestamp::now() }));
        match self.queue.try_send(job) {
            Ok(()) => {
                let dropped = self.dropped.swap(0, Ordering::Relaxed);
                if dropped > 0 {
                    tracing::warn!(dropped, "dropped Events while the event queue was full");
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!("the event writers have stopped; event not written");
            }
        }
    }

    /// Waits until every Event sent before this call is written (or failed).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.queue.send(Job::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// Hands queued Events to at most [`WRITERS`] concurrent writes.
async fn drain(writer: Arc<EventWriter>, mut jobs: mpsc::Receiver<Job>) {
    let slots = Arc::new(Semaphore::new(WRITERS));
    while let Some(job) = jobs.recv().await {
        match job {
            Job::Write(pending) => {
                let Pending { event, regarding, at } = *pending;
                let Ok(slot) = slots.clone().acquire_owned().await else { return };
                let writer = writer.clone();
                tokio::spawn(async move {
                    if let Err(e) = writer.write(&event, &regarding, at).await {
                        tracing::warn!(reason = %event.reason, error = %e, "could not write event");
                    }
                    drop(slot);
                });
            }
            Job::Flush(done) => {
                // Holding every slot means every write started before has ended.
                let Ok(all) = slots.acquire_many(WRITERS as u32).await else { return };
                drop(all);
                let _ = done.send(());
            }
        }
    }
}

/// Writes Events to the API server.
struct EventWriter {
    client: Client,
    reporter: Reporter,
    recent: Mutex<RecentEvents>,
}

/// The bounded memory of recently published Events, by series key.
#[derive(Debug, Default)]
struct RecentEvents {
    by_key: HashMap<u64, Recent>,
}

impl RecentEvents {
    /// The Event of this series, if it is still inside the series window.
    fn get(&self, key: u64, now: Timestamp) -> Option<Recent> {
        self.by_key.get(&key).filter(|r| r.last + SERIES_WINDOW > now).cloned()
    }

    /// Remembers an Event, forgetting expired ones and then the oldest when full.
    fn insert(&mut self, key: u64, entry: Recent, now: Timestamp) {
        if self.by_key.len() >= MAX_REMEMBERED && !self.by_key.contains_key(&key) {
            self.by_key.retain(|_, r| r.last + SERIES_WINDOW > now);
            if self.by_key.len() >= MAX_REMEMBERED
                && let Some(oldest) = self.by_key.iter().min_by_key(|(_, r)| r.last).map(|(k, _)| *k)
            {
                self.by_key.remove(&oldest);
            }
        }
        self.by_key.insert(key, entry);
    }
}

impl EventWriter {
    /// Creates the Event, or continues its series when the same object, action, reason and note were
    /// reported within the series window (the API server keeps an Event's note immutable, so another note
    /// is another Event).
    async fn write(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
        now: Timestamp,
    ) -> Result<(), kube::Error> {
        let key = series_key(ev, regarding);
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".to_owned());
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        let previous = self.recent().get(key, now);
        let continued = match previous {
            Some(mut r) => {
                r.count += 1;
                r.last = now;
                let patch = serde_json::json!({
                    "series": EventSeries { count: r.count, last_observed_time: MicroTime(now) },
                });
                match api.patch(&r.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(_) => Some(r),
                    // Deleted meanwhile (Events expire on the API server): start a new one.
                    Err(kube::Error::Api(e)) if e.code == 404 => None,
                    Err(e) => return Err(e),
                }
            }
            None => None,
        };
        let recent = match continued {
            Some(r) => r,
            None => {
                let event = self.new_event(ev, regarding, &namespace, now);
                let created = api.create(&PostParams::default(), &event).await?;
                Recent { name: created.metadata.name.unwrap_or_default(), count: 1, last: now }
            }
        };
        self.recent().insert(key, recent, now);
        Ok(())
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, RecentEvents> {
        // The map holds no invariant a panic elsewhere could break: a poisoned lock is still usable.
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new_event(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
        namespace: &str,
        now: Timestamp,
    ) -> K8sEvent {
        let object = regarding.name.as_deref().unwrap_or(&self.reporter.controller);
        K8sEvent {
            metadata: ObjectMeta {
                namespace: Some(namespace.to_owned()),
                name: Some(format!("{object}.{:x}", now.as_nanosecond())),
                ..Default::default()
            },
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            note: ev.note.clone(),
            type_: Some(event_type(ev.type_).to_owned()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter.instance.clone().unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            ..Default::default()
        }
    }
}

fn event_type(t: EventType) -> &'static str {
    match t {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

/// Identity of a series: the object, the action, the reason, the type and the note.
fn series_key(ev: &Event, regarding: &ObjectReference) -> u64 {
    let mut h = DefaultHasher::new();
    (
        &regarding.uid,
        &regarding.namespace,
        &regarding.name,
        &regarding.kind,
        &ev.action,
        &ev.reason,
        &ev.note,
        event_type(ev.type_),
    )
        .hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(name: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("FineTuneJob".into()),
            namespace: Some("ns".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    fn event(reason: &str, note: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Reconcile".into(),
            secondary: None,
        }
    }

    #[test]
    fn a_series_is_the_same_object_action_reason_type_and_note() {
        let a = series_key(&event("Submitted", "one"), &reference("a"));
        assert_eq!(a, series_key(&event("Submitted", "one"), &reference("a")));
        assert_ne!(a, series_key(&event("Submitted", "two"), &reference("a")));
        assert_ne!(a, series_key(&event("Running", "one"), &reference("a")));
        assert_ne!(a, series_key(&event("Submitted", "one"), &reference("b")));
        let mut warning = event("Submitted", "one");
        warning.type_ = EventType::Warning;
        assert_ne!(a, series_key(&warning, &reference("a")));
    }

    fn recent(name: &str, last: Timestamp) -> Recent {
        Recent { name: name.into(), count: 1, last }
    }

    #[test]
    fn a_series_ends_after_the_window() {
        let t0 = Timestamp::UNIX_EPOCH;
        let mut r = RecentEvents::default();
        r.insert(1, recent("a", t0), t0);
        assert_eq!(r.get(1, t0 + SignedDuration::from_mins(5)).map(|e| e.name), Some("a".into()));
        assert!(r.get(1, t0 + SignedDuration::from_mins(7)).is_none());
        assert!(r.get(2, t0).is_none());
    }

    #[test]
    fn memory_is_bounded_and_forgets_the_oldest_first() {
        let t0 = Timestamp::UNIX_EPOCH;
        let mut r = RecentEvents::default();
        let n = MAX_REMEMBERED as u64 + 500;
        for k in 0..n {
            let at = t0 + SignedDuration::from_millis(k as i64);
            r.insert(k, recent(&k.to_string(), at), at);
        }
        let end = t0 + SignedDuration::from_millis(n as i64);
        assert_eq!(r.by_key.len(), MAX_REMEMBERED);
        assert!(r.get(0, end).is_none(), "the oldest is forgotten");
        assert!(r.get(n - 1, end).is_some(), "the newest is kept");
        // Expired entries go before live ones.
        let later = end + SignedDuration::from_mins(10);
        r.insert(n, recent("late", later), later);
        assert_eq!(r.by_key.len(), 1);
    }
}
