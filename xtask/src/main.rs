//! `cargo xtask`: builds and runs the local Kubernetes control plane (see `xtask::control_plane`).
#![forbid(unsafe_code)]

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use xtask::control_plane::{self, ControlPlane, Options};

#[derive(Parser, Debug)]
#[command(name = "xtask", about = "Developer tasks of azureml-operator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build kube-apiserver, kubectl and etcd into the cache if they are not there, and print
    /// their paths.
    BuildControlPlane,
    /// Start a local control plane, print how to reach it, and keep it up until Ctrl-C.
    ControlPlane {
        /// Install the CRDs in this directory once the API server is ready.
        #[arg(long, value_name = "DIR")]
        crds: Option<PathBuf>,
    },
    /// Run the notebook's whole workflow on the local control plane and the Azure ML emulator.
    Demo,
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::BuildControlPlane => build().await,
        Command::ControlPlane { crds } => run(crds).await,
        Command::Demo => {
            let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
            return match xtask::demo::run(&repo, xtask::demo::Binaries::Build).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("demo failed: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn build() -> control_plane::Result<()> {
    let binaries = control_plane::build_binaries().await?;
    println!("kube-apiserver {}", binaries.kube_apiserver.display());
    println!("etcd {}", binaries.etcd.display());
    println!("kubectl {}", binaries.kubectl.display());
    Ok(())
}

async fn run(crds: Option<PathBuf>) -> control_plane::Result<()> {
    let cp = ControlPlane::start(Options::default()).await?;
    if let Some(dir) = crds {
        for name in cp.install_crds(&dir).await? {
            eprintln!("installed CRD {name}");
        }
    }
    eprintln!("control plane at {} (scratch directory {})", cp.server_url(), cp.dir().display());
    eprintln!("kubectl: {}", cp.binaries().kubectl.display());
    println!("export KUBECONFIG={}", cp.kubeconfig_path().display());
    eprintln!("press Ctrl-C to stop");
    tokio::signal::ctrl_c().await.map_err(control_plane::Error::io("wait for Ctrl-C in", cp.dir()))?;
    eprintln!("stopping");
    Ok(())
}
