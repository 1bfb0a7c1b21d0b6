//! Builds the pinned kube-apiserver, kubectl and etcd from the Go module proxy (the modules in
//! `hack/k8s` and `hack/etcd`) into a per-version cache outside the repository, once.

use std::{
    ffi::OsString,
    fs::{self, File},
    path::{Path, PathBuf},
    process::Command,
};

use super::{Error, Result, tail};

/// Kubernetes version of kube-apiserver and kubectl; must equal the `k8s.io/kubernetes`
/// requirement in `hack/k8s/go.mod`.
pub const KUBERNETES_VERSION: &str = "v1.37.2";

/// etcd version; must equal the `go.etcd.io/etcd/server/v3` requirement in `hack/etcd/go.mod`.
pub const ETCD_VERSION: &str = "v3.7.3";

/// Paths of the control-plane binaries in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// The Kubernetes API server.
    pub kube_apiserver: PathBuf,
    /// The etcd server.
    pub etcd: PathBuf,
    /// kubectl of the same Kubernetes version.
    pub kubectl: PathBuf,
}

impl Binaries {
    fn in_dir(dir: &Path) -> Self {
        Self {
            kube_apiserver: dir.join("kube-apiserver"),
            etcd: dir.join("etcd"),
            kubectl: dir.join("kubectl"),
        }
    }

    fn all_present(&self) -> bool {
        [&self.kube_apiserver, &self.etcd, &self.kubectl].iter().all(|p| p.is_file())
    }
}

/// The cache directory name: one per pair of versions, so a version bump builds afresh and older
/// checkouts keep using theirs.
pub fn cache_key() -> String {
    format!("{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}")
}

/// `${AZUREML_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/azureml-operator}` (empty counts as
/// unset, as in the shell).
pub fn cache_root() -> Result<PathBuf> {
    cache_root_from(|name| std::env::var_os(name))
}

fn cache_root_from(var: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    let var = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("AZUREML_OPERATOR_CACHE") {
        return Ok(dir);
    }
    let base = var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|home| home.join(".cache")));
    base.map(|b| b.join("azureml-operator")).ok_or(Error::NoCacheDir)
}

/// The directory holding the Go build modules (`hack/` at the repository root).
pub fn hack_dir() -> PathBuf {
    // xtask/ sits directly under the repository root.
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".")).join("hack")
}

/// Returns the cached binaries, building them first if this version pair is not cached yet.
///
/// Blocking (a cold build takes minutes). Concurrent callers, in this or other processes, wait on
/// a file lock so only one builds; the build goes to a staging directory renamed into place at the
/// end, so a killed build never leaves a half-filled cache.
pub fn ensure_binaries() -> Result<Binaries> {
    let parent = cache_root()?.join("k8s");
    let key = cache_key();
    let dir = parent.join(&key);
    let binaries = Binaries::in_dir(&dir);
    if binaries.all_present() {
        return Ok(binaries);
    }

    fs::create_dir_all(&parent).map_err(Error::io("create the cache directory", &parent))?;
    let lock_path = parent.join(format!(".{key}.lock"));
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(Error::io("open the build lock", &lock_path))?;
    lock.lock().map_err(Error::io("lock", &lock_path))?;
    // Another process may have finished the build while we waited for the lock.
    if binaries.all_present() {
        return Ok(binaries);
    }

    // Holding the lock, any staging directory left is from a killed build.
    let staging_prefix = format!(".{key}.staging-");
    if let Ok(entries) = fs::read_dir(&parent) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&staging_prefix) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let staging = parent.join(format!("{staging_prefix}{}", std::process::id()));
    fs::create_dir_all(&staging).map_err(Error::io("create the staging directory", &staging))?;

    eprintln!(
        "building kube-apiserver and kubectl {KUBERNETES_VERSION} and etcd {ETCD_VERSION} into {} \
         (once per version; takes several minutes)",
        dir.display()
    );
    let built = build_into(&staging);
    if built.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    built?;

    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(Error::io("remove the incomplete cache", &dir))?;
    }
    fs::rename(&staging, &dir).map_err(Error::io("move the build into the cache", &dir))?;
    Ok(binaries)
}

/// Builds all three binaries into `dir`.
fn build_into(dir: &Path) -> Result<()> {
    let hack = hack_dir();
    go_build(
        &hack.join("k8s"),
        &kubernetes_version_ldflags(),
        dir,
        &["k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kubectl"],
    )?;
    go_build(&hack.join("etcd"), "", &dir.join("etcd"), &["go.etcd.io/etcd/server/v3"])
}

/// [`ensure_binaries`] on a blocking thread, for async callers.
pub async fn build_binaries() -> Result<Binaries> {
    tokio::task::spawn_blocking(ensure_binaries).await.map_err(|e| Error::Io {
        action: "build",
        path: hack_dir(),
        source: std::io::Error::other(e),
    })?
}

/// Stamps the version the binaries report (`/version`, `kubectl version`): a module build has no
/// git metadata to take it from.
fn kubernetes_version_ldflags() -> String {
    let mut parts = KUBERNETES_VERSION.trim_start_matches('v').split('.');
    let (major, minor) = (parts.next().unwrap_or("0"), parts.next().unwrap_or("0"));
    let pkg = "k8s.io/component-base/version";
    format!("-X {pkg}.gitVersion={KUBERNETES_VERSION} -X {pkg}.gitMajor={major} -X {pkg}.gitMinor={minor}")
}

/// Runs `go build` in `module` for `packages`, writing to `output` (a directory when it ends in
/// a path separator for several packages, else the binary's path).
fn go_build(module: &Path, extra_ldflags: &str, output: &Path, packages: &[&str]) -> Result<()> {
    // Checked first: spawning in a missing directory also fails with NotFound, which would
    // otherwise read as "go is not installed".
    let go_mod = module.join("go.mod");
    fs::metadata(&go_mod).map_err(Error::io("find the pinned Go module", &go_mod))?;
    let mut out = output.as_os_str().to_owned();
    if packages.len() > 1 {
        // `go build -o dir/` writes one binary per package into dir.
        out.push("/");
    }
    let result = Command::new("go")
        .current_dir(module)
        .args(["build", "-trimpath", "-buildvcs=false", "-ldflags"])
        .arg(format!("-s -w {extra_ldflags}"))
        .arg("-o")
        .arg(out)
        .args(packages)
        // Never download another Go toolchain: the pinned modules' go directive must be met by
        // the installed one, and a mismatch should fail loudly rather than fetch.
        .env("GOTOOLCHAIN", "local")
        // Static binaries, and no C toolchain needed.
        .env("CGO_ENABLED", "0")
        .output();
    let result = match result {
        Err(source) if source.kind() == std::io::ErrorKind::NotFound => return Err(Error::GoMissing),
        other => other.map_err(Error::io("run go build in", module))?,
    };
    if !result.status.success() {
        let mut log = String::from_utf8_lossy(&result.stdout).into_owned();
        log.push_str(&String::from_utf8_lossy(&result.stderr));
        return Err(Error::GoBuild {
            module: module.to_path_buf(),
            status: result.status,
            output_tail: tail(&log, 40),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| OsString::from(v))
    }

    /// The explicit override wins over XDG and HOME.
    #[test]
    fn cache_root_prefers_the_override() {
        let vars = [("AZUREML_OPERATOR_CACHE", "/c"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(cache_root_from(env(&vars)).expect("root"), PathBuf::from("/c"));
    }

    /// Without the override the XDG cache is used, then ~/.cache; empty values count as unset.
    #[test]
    fn cache_root_falls_back_to_xdg_then_home() {
        let xdg = [("AZUREML_OPERATOR_CACHE", ""), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(cache_root_from(env(&xdg)).expect("root"), PathBuf::from("/x/azureml-operator"));
        let home = [("XDG_CACHE_HOME", ""), ("HOME", "/h")];
        assert_eq!(cache_root_from(env(&home)).expect("root"), PathBuf::from("/h/.cache/azureml-operator"));
        assert!(matches!(cache_root_from(env(&[])), Err(Error::NoCacheDir)));
    }

    /// The cache key names both versions, so bumping either builds into a new directory.
    #[test]
    fn cache_key_names_both_versions() {
        assert_eq!(cache_key(), "v1.37.2-etcd-v3.7.3");
    }

    /// The Rust constants (the cache key) and the Go modules (what is actually built) must agree,
    /// or a version bump in one place would reuse a cache built from the other.
    #[test]
    fn versions_match_the_go_modules() {
        let read = |m: &str| fs::read_to_string(hack_dir().join(m).join("go.mod")).expect("read go.mod");
        // The version on the `require` line of `module`.
        let required = |go_mod: &str, module: &str| {
            go_mod.lines().find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some(module)).then(|| words.next().map(str::to_string)).flatten()
            })
        };
        let k8s = read("k8s");
        assert_eq!(required(&k8s, "k8s.io/kubernetes").as_deref(), Some(KUBERNETES_VERSION));
        let staging = KUBERNETES_VERSION.replacen("v1.", "v0.", 1);
        for line in k8s.lines().filter(|l| l.contains("=>")) {
            assert!(line.ends_with(&format!(" {staging}")), "staging module not at {staging}: {line}");
        }
        let etcd = read("etcd");
        assert_eq!(required(&etcd, "go.etcd.io/etcd/server/v3").as_deref(), Some(ETCD_VERSION));
    }

    /// A missing module directory is reported as such, not as a missing `go`.
    #[test]
    fn a_missing_module_is_not_reported_as_missing_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let error =
            go_build(&dir.path().join("nope"), "", dir.path(), &["example.com/x"]).expect_err("fails");
        assert!(matches!(&error, Error::Io { action: "find the pinned Go module", .. }), "{error}");
    }

    #[test]
    fn version_ldflags_split_major_and_minor() {
        let flags = kubernetes_version_ldflags();
        assert!(flags.contains("gitVersion=v1.37.2"), "{flags}");
        assert!(flags.contains("gitMajor=1 ") && flags.ends_with("gitMinor=37"), "{flags}");
    }
}
