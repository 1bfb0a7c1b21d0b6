//! The `azureml-emulator` command: runs the emulator until interrupted.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use azureml_emulator::{Config, Emulator, Seeds};
use clap::Parser;

/// An emulator of the Azure Machine Learning control plane and scoring plane.
#[derive(Parser, Debug)]
#[command(name = "azureml-emulator", version, about)]
struct Args {
    /// HTTPS port (0 = a free port).
    #[arg(long, env = "AZUREML_EMULATOR_HTTPS_PORT", default_value_t = 8443)]
    https_port: u16,
    /// Plain HTTP port (0 = a free port).
    #[arg(long, env = "AZUREML_EMULATOR_HTTP_PORT", default_value_t = 8080)]
    http_port: u16,
    /// Address to listen on.
    #[arg(long, env = "AZUREML_EMULATOR_BIND", default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// Where to write the generated CA certificate (PEM).
    #[arg(long, env = "AZUREML_EMULATOR_CA_OUT")]
    ca_out: Option<PathBuf>,
    /// How many times faster than Azure emulated operations run (1 = real durations).
    #[arg(long, env = "AZUREML_EMULATOR_TIME_SCALE", default_value_t = 1.0)]
    time_scale: f64,
    /// Azure AD tenant id.
    #[arg(long, default_value_t = Seeds::default().tenant_id)]
    tenant_id: String,
    /// Client id of the seeded service principal.
    #[arg(long, default_value_t = Seeds::default().client_id)]
    client_id: String,
    /// Client secret of the seeded service principal.
    #[arg(long, env = "AZUREML_EMULATOR_CLIENT_SECRET", default_value_t = Seeds::default().client_secret)]
    client_secret: String,
    /// Subscription id of the seeded workspace.
    #[arg(long, default_value_t = Seeds::default().subscription_id)]
    subscription_id: String,
    /// Resource group of the seeded workspace.
    #[arg(long, default_value_t = Seeds::default().resource_group)]
    resource_group: String,
    /// Name of the seeded workspace.
    #[arg(long, default_value_t = Seeds::default().workspace)]
    workspace: String,
    /// Region of the seeded workspace.
    #[arg(long, default_value_t = Seeds::default().location)]
    location: String,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new(&args.log)).init();
    let config = Config {
        bind_address: args.bind,
        https_port: args.https_port,
        http_port: args.http_port,
        ca_out: args.ca_out,
        time_scale: args.time_scale,
        seeds: Seeds {
            tenant_id: args.tenant_id,
            client_id: args.client_id,
            client_secret: args.client_secret,
            subscription_id: args.subscription_id,
            resource_group: args.resource_group,
            workspace: args.workspace,
            location: args.location,
            ..Seeds::default()
        },
        ..Config::default()
    };
    let emulator = match Emulator::start(config).await {
        Ok(emulator) => emulator,
        Err(err) => {
            eprintln!("azureml-emulator: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("https: {}", emulator.https_url());
    println!("http:  {}", emulator.http_url());
    println!("ca:    {}", emulator.ca_path().display());
    let _ = tokio::signal::ctrl_c().await;
    emulator.shutdown().await;
    std::process::ExitCode::SUCCESS
}
