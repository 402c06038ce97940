//! Sluice's own services as child processes, for runs that kill them (`kill
//! -9`) and start them again: the binary found next to this executable, its
//! config and log in the temp directory, and the addresses it serves on read
//! from its log (each binds port 0 and says where, so no port is ever chosen
//! here and raced for by another run).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::time::Instant;

/// A sluice binary: `$env_var`, else next to this executable (or a level up,
/// for test binaries in `deps/`).
pub fn binary(name: &str, env_var: &str) -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var(env_var) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        let candidate = d.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent().filter(|p| p.file_name().is_some_and(|n| n != "target")).map(Path::to_path_buf);
    }
    bail!("cannot find the {name} binary next to {}; build it (cargo build) or set {env_var}", exe.display())
}

/// The text of a log line without its terminal colour codes.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the end of the escape sequence (a letter).
            for e in chars.by_ref() {
                if e.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn unique() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}-{}", std::process::id(), t.as_nanos())
}

/// One running service.
pub struct Service {
    pub name: String,
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
}

impl Service {
    /// Starts `binary --config <file with config_text>` with `env`, its log in a file.
    pub fn spawn(name: &str, binary: &Path, config_text: &str, env: &[(String, String)]) -> anyhow::Result<Service> {
        let base = std::env::temp_dir().join(format!("sluice-{name}-{}", unique()));
        let config = base.with_extension("toml");
        let log = base.with_extension("log");
        std::fs::write(&config, config_text)?;
        let mut cmd = Command::new(binary);
        // No backtrace: a service that cannot start leaves its one-line reason in the log tail.
        cmd.arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(Service { name: name.into(), child: Some(child), config, log })
    }

    /// Kill -9.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for a log line containing `marker` with every `key=` in `keys`, and
    /// returns those values, in order.
    pub async fn logged(&mut self, marker: &str, keys: &[&str], within: Duration) -> anyhow::Result<Vec<String>> {
        let end = Instant::now() + within;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(line) = text.lines().map(strip_ansi).find(|l| l.contains(marker)) {
                let value = |key: &str| line.split_whitespace().find_map(|w| w.strip_prefix(key)).map(str::to_owned);
                if let Some(found) = keys.iter().map(|k| value(k)).collect::<Option<Vec<_>>>() {
                    return Ok(found);
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                bail!("{} exited ({status}) before logging '{marker}':\n{}", self.name, self.log_tail());
            }
            if Instant::now() > end {
                bail!("{} did not log '{marker}' within {within:?}:\n{}", self.name, self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of its log, for a failing test to show.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
        // SLUICE_KEEP_LOGS keeps each service's config and log in the temp directory.
        if std::env::var_os("SLUICE_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_file(&self.config);
            let _ = std::fs::remove_file(&self.log);
        }
    }
}
