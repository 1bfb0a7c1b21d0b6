//! Crash safety: complete workflows (FineTuneJob → ModelRegistration → OnlineEndpoint → delete) run
//! while the operator is killed at random points and restarted; afterwards every resource has exactly
//! one Azure job, one model version and one endpoint, and deletion leaves no endpoint behind.
//!
//! The seed of the kill schedule is printed; `RELIABILITY_SEED=<n>` replays a schedule.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use azureml_operator::api::conditions;
use azureml_operator::api::finetunejob::Phase;
use azureml_operator::api::{FineTuneJob, ModelRegistration, OnlineEndpoint};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::operator::Operator;

/// Workflows run side by side.
const WORKFLOWS: usize = 8;
/// Kills while the workflows run, then while they are deleted.
const KILLS_RUNNING: usize = 30;
const KILLS_DELETING: usize = 10;
/// Upper bound of either phase.
const PHASE_LIMIT: Duration = Duration::from_secs(150);

fn workflow(i: usize) -> [Value; 3] {
    let name = format!("wf{i}");
    [
        json!({
            "apiVersion": "azureml-operator.io/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": name},
            "spec": {
                "model": {"registry": "azureml", "name": "Phi-3-mini-4k-instruct"},
                "compute": {"name": "gpu-cluster"},
                "data": {
                    "train": "azureml://datastores/workspaceblobstore/paths/ultrachat_200k/train_sft.jsonl",
                    "test": "azureml://datastores/workspaceblobstore/paths/ultrachat_200k/test_sft.jsonl"
                }
            }
        }),
        json!({
            "apiVersion": "azureml-operator.io/v1alpha1",
            "kind": "ModelRegistration",
            "metadata": {"name": name},
            "spec": {"source": {"fineTuneJobRef": {"name": name}}}
        }),
        json!({
            "apiVersion": "azureml-operator.io/v1alpha1",
            "kind": "OnlineEndpoint",
            "metadata": {"name": name},
            "spec": {
                "deployments": [{
                    "name": "demo",
                    "model": {"modelRegistrationRef": {"name": name}},
                    "instanceType": "Standard_NC6s_v3",
                    "instanceCount": 1
                }],
                "traffic": {"demo": 100}
            }
        }),
    ]
}

fn endpoint_ready(oe: &OnlineEndpoint) -> bool {
    oe.status.as_ref().is_some_and(|s| conditions::is_ready(&s.conditions, oe.metadata.generation))
}

fn stalled(conds: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> Option<String> {
    conditions::find(conds, conditions::STALLED)
        .filter(|c| c.status == "True")
        .map(|c| format!("{}: {}", c.reason, c.message))
}

/// The three kinds in the test namespace, on one client (building a client per read is slow).
type Apis = (Api<FineTuneJob>, Api<ModelRegistration>, Api<OnlineEndpoint>);

/// Every workflow's endpoint is Ready; a Stalled resource fails the test at once with its reason.
async fn all_serving(apis: &Apis) -> bool {
    let (ftjs, mregs, oes) = apis;
    let mut ready = 0;
    for i in 0..WORKFLOWS {
        let name = format!("wf{i}");
        let f = ftjs.get(&name).await.expect("read FineTuneJob");
        let m = mregs.get(&name).await.expect("read ModelRegistration");
        let oe = oes.get(&name).await.expect("read OnlineEndpoint");
        for (kind, s) in [
            ("FineTuneJob", f.status.as_ref().and_then(|s| stalled(&s.conditions))),
            ("ModelRegistration", m.status.as_ref().and_then(|s| stalled(&s.conditions))),
            ("OnlineEndpoint", oe.status.as_ref().and_then(|s| stalled(&s.conditions))),
        ] {
            assert!(s.is_none(), "{kind} {name} stalled after a crash: {s:?}");
        }
        assert_ne!(f.status.as_ref().map(|s| s.phase), Some(Phase::Failed), "FineTuneJob {name} failed");
        ready += usize::from(endpoint_ready(&oe));
    }
    ready == WORKFLOWS
}

async fn all_gone(apis: &Apis) -> bool {
    let (ftjs, mregs, oes) = apis;
    let counts = [
        ftjs.list(&Default::default()).await.expect("list").items.len(),
        mregs.list(&Default::default()).await.expect("list").items.len(),
        oes.list(&Default::default()).await.expect("list").items.len(),
    ];
    counts.iter().all(|&n| n == 0)
}

/// What the workflows must reach while the operator is being killed.
#[derive(Debug, Clone, Copy)]
enum Goal {
    Serving,
    Released,
}

impl Goal {
    /// Milliseconds between a restart and the next kill: deletion is quicker, so kills come faster.
    fn kill_gap_ms(self) -> std::ops::Range<u64> {
        match self {
            Goal::Serving => 20..400,
            Goal::Released => 20..300,
        }
    }
}

/// Kills the operator at random points until `done` holds or `max_kills` is reached, then lets it
/// run undisturbed until `done`. Returns the number of kills.
async fn kill_until(op: &mut Operator, rng: &mut StdRng, max_kills: usize, goal: Goal) -> usize {
    let client = op.client().await;
    let apis: Apis = (
        Api::namespaced(client.clone(), &op.namespace),
        Api::namespaced(client.clone(), &op.namespace),
        Api::namespaced(client, &op.namespace),
    );
    let deadline = tokio::time::Instant::now() + PHASE_LIMIT;
    let mut kills = 0;
    // Checking reads every resource and takes a while on a busy machine: check about once a
    // second so that the kill schedule, not the checking, sets the pace.
    let mut last_check: Option<tokio::time::Instant> = None;
    loop {
        if last_check.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) || kills >= max_kills {
            let done = match goal {
                Goal::Serving => all_serving(&apis).await,
                Goal::Released => all_gone(&apis).await,
            };
            if done {
                break;
            }
            last_check = Some(tokio::time::Instant::now());
        }
        assert!(tokio::time::Instant::now() < deadline, "{goal:?}: not reached within {PHASE_LIMIT:?}");
        if kills < max_kills {
            // Anywhere from the first list after a restart to mid-request to after a few reconciles.
            tokio::time::sleep(Duration::from_millis(rng.random_range(goal.kill_gap_ms()))).await;
            op.kill();
            kills += 1;
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..150))).await;
            op.restart().await;
        } else {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    kills
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_survive_random_kills_without_duplicates_or_orphans() {
    let seed: u64 = std::env::var("RELIABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| jiff::Timestamp::now().as_nanosecond() as u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = std::time::Instant::now();
    let mut op = Operator::start("rel-crash").await;
    let ns = op.namespace.clone();

    for i in 0..WORKFLOWS {
        let [ftj, mreg, oe] = workflow(i);
        op.create::<OnlineEndpoint>(oe).await;
        op.create::<ModelRegistration>(mreg).await;
        op.create::<FineTuneJob>(ftj).await;
    }
    let kills_running = kill_until(&mut op, &mut rng, KILLS_RUNNING, Goal::Serving).await;
    let serving_after = started.elapsed();

    // Exactly one of each Azure resource per custom resource.
    let state = op.admin_get("/_emulator/state").await;
    let ftjs = op.api::<FineTuneJob>().await;
    let mregs = op.api::<ModelRegistration>().await;
    let mut duplicates = 0;
    let mut per_cr = BTreeMap::new();
    for i in 0..WORKFLOWS {
        let name = format!("wf{i}");
        let f = ftjs.get(&name).await.expect("read");
        let uid = f.uid().expect("uid");
        let job_prefix = format!("{ns}-{name}-");
        let jobs = state["jobs"]
            .as_array()
            .map(|js| {
                js.iter().filter(|j| j["name"].as_str().is_some_and(|n| n.starts_with(&job_prefix))).count()
            })
            .unwrap_or(0);
        let model_name =
            mregs.get(&name).await.expect("read").status.and_then(|s| s.model_name).expect("model name");
        let versions = state["models"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == model_name.as_str()))
            .and_then(|m| m["versions"].as_array().map(Vec::len))
            .unwrap_or(0);
        let endpoints = state["endpoints"]
            .as_array()
            .map(|es| es.iter().filter(|e| e["name"] == name.as_str()).count())
            .unwrap_or(0);
        let deployments = state["endpoints"]
            .as_array()
            .and_then(|es| es.iter().find(|e| e["name"] == name.as_str()))
            .and_then(|e| e["deployments"].as_array().map(Vec::len))
            .unwrap_or(0);
        duplicates += jobs.saturating_sub(1) + versions.saturating_sub(1) + endpoints.saturating_sub(1);
        duplicates += deployments.saturating_sub(1);
        per_cr.insert(name.clone(), (jobs, versions, endpoints, deployments, uid));
    }
    let job_puts = op.requests_matching("PUT", "/jobs/").await.len();
    let model_puts = op.requests_matching("PUT", "/versions/").await.len();

    // Tear down, killing again.
    for i in 0..WORKFLOWS {
        let name = format!("wf{i}");
        op.api::<OnlineEndpoint>().await.delete(&name, &DeleteParams::default()).await.expect("delete");
        op.api::<ModelRegistration>().await.delete(&name, &DeleteParams::default()).await.expect("delete");
        op.api::<FineTuneJob>().await.delete(&name, &DeleteParams::default()).await.expect("delete");
    }
    let kills_deleting = kill_until(&mut op, &mut rng, KILLS_DELETING, Goal::Released).await;
    let state = op.admin_get("/_emulator/state").await;
    let endpoints_left: Vec<Value> = state["endpoints"].as_array().cloned().unwrap_or_default();
    let jobs_running = state["jobs"]
        .as_array()
        .map(|js| {
            js.iter()
                .filter(|j| !matches!(j["status"].as_str(), Some("Completed" | "Failed" | "Canceled")))
                .count()
        })
        .unwrap_or(0);
    let orphans = endpoints_left.len() + jobs_running;
    let total = started.elapsed();

    println!("crash safety (seed {seed}):");
    println!(
        "  workflows {WORKFLOWS}, kills {} ({kills_running} while running, {kills_deleting} while deleting)",
        kills_running + kills_deleting
    );
    println!("  per workflow (jobs, model versions, endpoints, deployments):");
    for (name, (j, v, e, d, _)) in &per_cr {
        println!("    {name}: {j} {v} {e} {d}");
    }
    println!(
        "  job PUTs {job_puts}, model version PUTs {model_puts} (retries of one name are not duplicates)"
    );
    println!(
        "  duplicates {duplicates}, orphans {orphans} (endpoints left {}, jobs still running {jobs_running})",
        endpoints_left.len()
    );
    println!("  all serving after {serving_after:.1?}, all released after {total:.1?}");

    for (name, (j, v, e, d, _)) in &per_cr {
        assert_eq!((*j, *v, *e, *d), (1, 1, 1, 1), "{name}: one job, version, endpoint, deployment");
    }
    assert_eq!(duplicates, 0);
    assert_eq!(orphans, 0, "left in Azure: {endpoints_left:?}");
}
