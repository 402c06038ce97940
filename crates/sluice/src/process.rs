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

/// The values of `keys` (`name=`) on `line` if it is the `marker` line: a text
/// line (`... marker name=value ...`) or a JSON one (`SLUICE_LOG_FORMAT=json`:
/// the marker its message, the values its fields).
fn marked(line: &str, marker: &str, keys: &[&str]) -> Option<Vec<String>> {
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(line) {
        if o.get("message").and_then(|m| m.as_str()) != Some(marker) {
            return None;
        }
        let field = |key: &str| {
            let v = o.get("fields")?.get(key.trim_end_matches('='))?;
            Some(v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        };
        return keys.iter().map(|k| field(k)).collect();
    }
    let line = strip_ansi(line);
    if !line.contains(marker) {
        return None;
    }
    keys.iter().map(|k| line.split_whitespace().find_map(|w| w.strip_prefix(k)).map(str::to_owned)).collect()
}

fn unique() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}-{}", std::process::id(), t.as_nanos())
}

/// One running service.
pub struct Service {
    pub name: String,
    child: Option<Child>,
    binary: PathBuf,
    env: Vec<(String, String)>,
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
        let mut s = Service { name: name.into(), child: None, binary: binary.to_owned(), env: env.to_vec(), config, log };
        s.launch()?;
        Ok(s)
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.binary);
        // No backtrace: a service that cannot start leaves its one-line reason in
        // the log tail. The log is appended to: a restart's lines follow the
        // killed run's.
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        cmd.arg("--config").arg(&self.config).env("RUST_LOG", "info").env("RUST_BACKTRACE", "0").stdout(Stdio::null()).stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().with_context(|| format!("cannot start {}", self.binary.display()))?);
        Ok(())
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kill -9.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again (after [`Service::kill`]) with the same environment and
    /// `config_text`, or the same config when None; returns the values of `keys`
    /// on the restarted run's `marker` line (as [`Service::logged`]).
    pub async fn restart(&mut self, config_text: Option<&str>, marker: &str, keys: &[&str]) -> anyhow::Result<Vec<String>> {
        self.kill();
        if let Some(t) = config_text {
            std::fs::write(&self.config, t)?;
        }
        // Only the new run's lines count.
        let skip = std::fs::read_to_string(&self.log).map(|t| t.len()).unwrap_or(0);
        self.launch()?;
        self.logged_after(skip, marker, keys, Duration::from_secs(60)).await
    }

    /// SIGTERM, then waits for the process to end: how long it took, or an error
    /// when it is still running after `grace` (it is then killed).
    pub async fn terminate(&mut self, grace: Duration) -> anyhow::Result<Duration> {
        let Some(pid) = self.pid() else { bail!("{} is not running", self.name) };
        let sent = Instant::now();
        // The shell's own `kill` (a minimal Debian has no /bin/kill; the
        // standard library sends only SIGKILL, and unsafe code is not allowed).
        let status = Command::new("sh").arg("-c").arg(format!("kill -TERM {pid}")).status().context("running sh -c kill")?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        loop {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Ok(sent.elapsed());
            }
            if sent.elapsed() > grace {
                self.kill();
                bail!("{} still ran {grace:?} after SIGTERM:\n{}", self.name, self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a log line containing `marker` with every `key=` in `keys`, and
    /// returns those values, in order.
    pub async fn logged(&mut self, marker: &str, keys: &[&str], within: Duration) -> anyhow::Result<Vec<String>> {
        self.logged_after(0, marker, keys, within).await
    }

    async fn logged_after(&mut self, skip: usize, marker: &str, keys: &[&str], within: Duration) -> anyhow::Result<Vec<String>> {
        let end = Instant::now() + within;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let text = text.get(skip..).unwrap_or_default();
            if let Some(found) = text.lines().find_map(|l| marked(l, marker, keys)) {
                return Ok(found);
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

    /// Its whole log (every run's).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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
