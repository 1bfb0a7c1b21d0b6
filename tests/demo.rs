//! Runs the README's demo scenario (the notebook's whole workflow) so it cannot rot.

use std::path::{Path, PathBuf};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_the_whole_notebook_workflow() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let operator = PathBuf::from(env!("CARGO_BIN_EXE_azureml-operator"));
    let emulator = operator.with_file_name("azureml-emulator");
    assert!(
        emulator.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds the emulator binary",
        emulator.display()
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask::demo::run(repo, xtask::demo::Binaries::Prebuilt { operator, emulator })
        .await
        .unwrap_or_else(|e| panic!("demo failed: {e}"));
}
