//! Where the test ground's binaries are: built by `hack/tools.sh` into a cache.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// The environment variable naming a directory that holds every tool.
pub const TOOLS_DIR_ENV: &str = "JETWAY_TOOLS_DIR";

/// A directory holding nats-server, etcd, kube-apiserver, kube-controller-manager, jaeger,
/// kubectl, nats and helm.
#[derive(Clone, Debug)]
pub struct Tools {
    dir: PathBuf,
}

impl Tools {
    /// Uses `JETWAY_TOOLS_DIR` when set, and otherwise runs `hack/tools.sh`, which
    /// builds whatever its cache lacks (minutes, once) and prints the directory.
    pub fn locate() -> anyhow::Result<Self> {
        if let Some(dir) = std::env::var_os(TOOLS_DIR_ENV) {
            return Ok(Self { dir: dir.into() });
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/tools.sh");
        let output = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !output.status.success() {
            bail!("{} failed ({})", script.display(), output.status);
        }
        let dir = String::from_utf8(output.stdout)?.trim().to_owned();
        Ok(Self { dir: dir.into() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of one tool, such as `nats-server` or `kubectl`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}
