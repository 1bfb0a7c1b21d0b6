//! The `azureml-operator` command line.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use prometheus_client::registry::Registry;

use azureml_operator::api;
use azureml_operator::azure::{AzureMl, ClientOptions};
use azureml_operator::controller::{self, Context, policy::Policy};
use azureml_operator::metrics::{self, HealthState, Metrics};
use azureml_operator::telemetry::{self, LogFormat};

/// jemalloc gives freed memory back to the system (its background thread purges unused pages), where
/// glibc's malloc kept the peak of every bulk list; see BENCHMARKS.md.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(name = "azureml-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the operator against the cluster in KUBECONFIG (or the in-cluster service account).
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML, or write one file per kind into a directory.
    Crd {
        /// Write `<crd name>.yaml` files into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Send a scoring request to an OnlineEndpoint and print the raw response (the notebook's step 8).
    Invoke(InvokeArgs),
}

#[derive(Args, Debug)]
struct InvokeArgs {
    /// Name of the OnlineEndpoint resource.
    name: String,
    /// Namespace of the resource (default: the kubeconfig context's namespace).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Send to this deployment, whatever the traffic split (header `azureml-model-deployment`).
    #[arg(long)]
    deployment: Option<String>,
    /// JSON request body, for example examples/sample_score.json.
    #[arg(long)]
    file: PathBuf,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Multiplies every poll and resync interval; below 1 for the time-compressed emulator.
    #[arg(long, env = "INTERVAL_SCALE", default_value_t = 1.0)]
    interval_scale: f64,
    /// Timeout of one Azure HTTP request, in seconds.
    #[arg(long, env = "AZURE_REQUEST_TIMEOUT", default_value_t = 30)]
    azure_request_timeout: u64,
    /// Take a Lease before reconciling, so only one replica acts at a time.
    #[arg(long, env = "LEADER_ELECTION")]
    leader_election: bool,
    /// Namespace of the Lease (default: the pod's namespace, else `default`).
    #[arg(long, env = "LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "azureml-operator")]
    lease_name: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd { out_dir } => print_crds(out_dir),
        Command::Run(args) => tokio_main(run(args)),
        Command::Invoke(args) => tokio_main(invoke(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn tokio_main<F: std::future::Future<Output = Result<(), BoxError>>>(
    f: F,
) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(f).map_err(|e| e as Box<dyn std::error::Error>)
}

fn print_crds(out_dir: Option<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    for crd in api::crds() {
        let yaml = api::crd_yaml(&crd)?;
        match &out_dir {
            Some(dir) => std::fs::write(dir.join(api::crd_file_name(&crd)), yaml)?,
            None => print!("---\n{yaml}"),
        }
    }
    Ok(())
}

async fn invoke(args: InvokeArgs) -> Result<(), BoxError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
    let body: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", args.file.display()))?;
    let client = kube::Client::try_default().await?;
    let namespace = args.namespace.unwrap_or_else(|| client.default_namespace().to_owned());
    let azure = AzureMl::new(ClientOptions::default());
    let reply = azureml_operator::invoke::invoke(
        client,
        &azure,
        &namespace,
        &args.name,
        args.deployment.as_deref(),
        body,
    )
    .await?;
    println!("{}", reply.body);
    if !(200..300).contains(&reply.status) {
        return Err(format!("the endpoint answered HTTP {}", reply.status).into());
    }
    Ok(())
}

async fn run(args: RunArgs) -> Result<(), BoxError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    telemetry::init(args.log_format);
    let client = kube::Client::try_default().await?;

    let metrics = Arc::new(Metrics::default());
    let azure = AzureMl::new(ClientOptions {
        request_timeout: Duration::from_secs(args.azure_request_timeout),
        ..ClientOptions::default()
    });
    let mut registry = Registry::with_prefix("azureml_operator");
    metrics.register(&mut registry);
    azure.metrics().register(&mut registry);
    let health = HealthState::new(registry);
    // Ready means the process is up and configured; a standby replica waiting for the Lease is ready too,
    // so rollouts and PodDisruptionBudgets work with several replicas.
    health.set_ready(true);
    tokio::spawn({
        let health = health.clone();
        async move {
            if let Err(e) = metrics::serve(args.metrics_addr, health).await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        }
    });

    if args.leader_election {
        let namespace = args
            .lease_namespace
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".to_owned());
        let identity =
            std::env::var("POD_NAME").unwrap_or_else(|_| format!("azureml-operator-{}", std::process::id()));
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.lease_name)
            .with_namespace(&namespace)
            .with_identity(&identity)
            .with_duration(15)
            .with_grace(5)
            .build()
            .await?;
        let (mut leader, _task) = manager.watch().await;
        tracing::info!(lease = %args.lease_name, %namespace, %identity, "waiting to become the leader");
        while !*leader.borrow_and_update() {
            leader.changed().await?;
        }
        tracing::info!("became the leader; starting controllers");
        // Losing the lease means another replica may already act: stop at once and let Kubernetes restart us.
        tokio::spawn(async move {
            loop {
                if leader.changed().await.is_err() || !*leader.borrow() {
                    tracing::error!("lost the leader lease; exiting");
                    std::process::exit(1);
                }
            }
        });
    }

    let policy = Policy::scaled(args.interval_scale);
    let ctx = Arc::new(Context::new(client, azure, policy, metrics));
    tracing::info!(namespace = args.namespace.as_deref().unwrap_or("<all>"), "azureml-operator started");
    controller::run_all(ctx, args.namespace).await;
    tracing::info!("azureml-operator stopped");
    Ok(())
}
