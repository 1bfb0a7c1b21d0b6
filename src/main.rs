//! The `azureml-operator` command line.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "azureml-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the operator.
    Run,
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Send a scoring request to an OnlineEndpoint and print the raw response.
    Invoke,
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Run | Command::Crd | Command::Invoke => {
            eprintln!("not implemented yet");
            std::process::exit(2);
        }
    }
}
