//! What tests and benchmarks start for themselves: a `nats-server` with JetStream
//! on a free port (never the one on 127.0.0.1:4222), so they can stop and restart
//! it and never collide with each other; the Python scripts that drive sluice
//! with real client libraries ([`run_python`]); and an OTLP/HTTP receiver that
//! collects the spans the services export ([`otlp`]).

pub mod otlp;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The repository's root (`scripts/`, `tests/python/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `tests/python/<script>` with `args` in the virtual environment that
/// `scripts/python-env` creates (or brings up to date) under the build folder;
/// returns whether it exited with success, and its output (stdout, then stderr).
pub async fn run_python(script: &str, args: Vec<String>) -> anyhow::Result<(bool, String)> {
    run_python_file(repo_root().join("tests/python").join(script), args).await
}

/// Like [`run_python`], for a script anywhere (the examples in `examples/python/`).
pub async fn run_python_file(script: PathBuf, args: Vec<String>) -> anyhow::Result<(bool, String)> {
    tokio::task::spawn_blocking(move || {
        let env = Command::new("bash").arg(repo_root().join("scripts/python-env")).output().context("running scripts/python-env")?;
        if !env.status.success() {
            bail!("scripts/python-env failed:\n{}", String::from_utf8_lossy(&env.stderr));
        }
        let python = PathBuf::from(String::from_utf8_lossy(&env.stdout).trim());
        let out = Command::new(&python).arg(&script).args(&args).output().with_context(|| format!("running {}", script.display()))?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Ok((out.status.success(), text))
    })
    .await
    .context("the Python runner panicked")?
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until a NATS server greets on `port` (its `INFO` line), so a port that
/// another process took in the meantime is not mistaken for ours.
async fn wait_nats(port: u16, name: &str, within: Duration) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Ok(mut c) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            // The INFO line names the server: another test's server that took the
            // port first greets too, and must not be mistaken for this one.
            let mut line = Vec::new();
            let mut buf = [0u8; 512];
            let read = tokio::time::timeout(Duration::from_secs(1), async {
                while !line.ends_with(b"\r\n") && line.len() < 8192 {
                    match c.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => line.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await;
            if read.is_ok() && line.starts_with(b"INFO") {
                let text = String::from_utf8_lossy(&line);
                if text.contains(&format!("\"server_name\":\"{name}\"")) {
                    return Ok(());
                }
                bail!("another NATS server answers on port {port}");
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("no NATS server greets on port {port} after {within:?}")
}

/// A nats-server with JetStream, on a free port, storing in a temporary directory.
pub struct Nats {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    /// More server arguments (e.g. `--user`, `--pass`).
    extra: Vec<String>,
}

impl Nats {
    pub async fn start() -> anyhow::Result<Nats> {
        Nats::start_with(&[]).await
    }

    /// A server with more arguments.
    pub async fn start_with(extra: &[&str]) -> anyhow::Result<Nats> {
        // A free port can be taken by another test before nats-server binds it:
        // then it exits, and a fresh port is tried.
        let mut tries = 0;
        loop {
            let port = free_port()?;
            let dir = std::env::temp_dir().join(format!("sluice-nats-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let mut n = Nats { child: None, port, dir, extra: extra.iter().map(|s| s.to_string()).collect() };
            match n.spawn().await {
                Ok(()) => return Ok(n),
                Err(e) if tries >= 3 => return Err(e),
                Err(_) => tries += 1,
            }
        }
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("sluice-test-{}-{}-{n}", std::process::id(), self.port);
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-n", &name, "-sd"])
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start nats-server (install it: apt-get install -y nats-server)")?;
        self.child = Some(child);
        wait_nats(self.port, &name, Duration::from_secs(10)).await
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn().await
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
