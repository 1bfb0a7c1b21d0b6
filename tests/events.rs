//! The operator's Event publisher against a real API server: a transition is one `events.k8s.io/v1`
//! Event naming the resource, a repeat continues that Event as a series, and another note (immutable
//! on the API server) is another Event. Events are written in the background; `flush` waits for them.

mod support;

use azureml_operator::controller::events::EventPublisher;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::Resource;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};

fn event(reason: &str, note: &str, type_: EventType) -> Event {
    Event {
        type_,
        reason: reason.into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    }
}

#[tokio::test]
async fn repeats_become_a_series_and_other_reasons_new_events() {
    let client = support::client().await;
    let ns = support::test_namespace("events").await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("subject".into());
    let cm = maps.create(&PostParams::default(), &cm).await.expect("create ConfigMap");
    let regarding = cm.object_ref(&());

    let publisher = EventPublisher::new(
        client.clone(),
        Reporter { controller: "azureml-operator".into(), instance: Some("pod-1".into()) },
    );
    let published = [
        ("DriftCorrected", "traffic put back", EventType::Normal),
        ("DriftCorrected", "traffic put back", EventType::Normal),
        ("DriftCorrected", "instanceCount put back", EventType::Normal),
        ("QuotaExceeded", "no quota", EventType::Warning),
    ];
    for (reason, note, type_) in published {
        publisher.send(event(reason, note, type_), regarding.clone());
        // One at a time: a repeat is only a series once the first Event exists.
        publisher.flush().await;
    }
    // Many at once: all written by the time flush returns.
    for i in 0..20 {
        publisher.send(event("Burst", &format!("burst {i}"), EventType::Normal), regarding.clone());
    }
    publisher.flush().await;

    let events: Vec<K8sEvent> =
        Api::<K8sEvent>::namespaced(client, &ns).list(&ListParams::default()).await.expect("list").items;
    let drift: Vec<&K8sEvent> =
        events.iter().filter(|e| e.reason.as_deref() == Some("DriftCorrected")).collect();
    assert_eq!(drift.len(), 2, "a repeat continues its Event, another note is a new one: {events:?}");
    let by_note = |note: &str| drift.iter().copied().find(|e| e.note.as_deref() == Some(note)).expect(note);
    assert!(by_note("instanceCount put back").series.is_none());
    let drift = by_note("traffic put back");
    assert_eq!(drift.series.as_ref().map(|s| s.count), Some(2));
    assert_eq!(drift.type_.as_deref(), Some("Normal"));
    assert_eq!(drift.reporting_controller.as_deref(), Some("azureml-operator"));
    assert_eq!(drift.reporting_instance.as_deref(), Some("pod-1"));
    let about = drift.regarding.as_ref().expect("regarding");
    assert_eq!((about.kind.as_deref(), about.name.as_deref()), (Some("ConfigMap"), Some("subject")));

    let burst = events.iter().filter(|e| e.reason.as_deref() == Some("Burst")).count();
    assert_eq!(burst, 20, "every queued Event is written before flush returns");

    let quota: Vec<&K8sEvent> =
        events.iter().filter(|e| e.reason.as_deref() == Some("QuotaExceeded")).collect();
    assert_eq!(quota.len(), 1);
    assert_eq!(quota[0].type_.as_deref(), Some("Warning"));
    assert!(quota[0].series.is_none());
}
