//! `sluice config check FILE...`: reads each configuration file the way its
//! service would at start and names every problem, so a bad file is found
//! before a deployment rather than by a pod that will not start. Which service
//! a file is for comes from its name (`dispatcher*.toml`, `collector*`,
//! `signal*`, `execution*`, `alerting*`, `alerts*`), or `--kind`; the older
//! `sluice config check <kind> <file>` still works. A rules file (`alerts`)
//! lists every problem at once, each with its line.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// Which service's file.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Kind {
    /// Alert rules (config/alerts.toml).
    Alerts,
    /// The alerting service (config/alerting.toml; its receivers' secrets are
    /// read from the environment as the service would).
    Alerting,
    Dispatcher,
    Collector,
    Signal,
    Execution,
}

#[derive(Args, Debug)]
pub struct FilesArgs {
    /// Which service the files are for (default: from each file's name).
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
    /// The files (a first argument naming a kind is the older form).
    #[arg(required = true)]
    pub files: Vec<String>,
}

/// One file of one kind.
#[derive(Debug)]
pub struct CheckArgs {
    pub kind: Kind,
    pub file: PathBuf,
}

/// The service a file is for, from its name.
pub fn kind_of(file: &std::path::Path) -> Option<Kind> {
    let name = file.file_name()?.to_string_lossy().to_ascii_lowercase();
    // "alerting" before "alerts": both start with "alert".
    [
        ("alerting", Kind::Alerting),
        ("alerts", Kind::Alerts),
        ("dispatcher", Kind::Dispatcher),
        ("collector", Kind::Collector),
        ("signal", Kind::Signal),
        ("execution", Kind::Execution),
    ]
    .into_iter()
    .find(|(prefix, _)| name.starts_with(prefix))
    .map(|(_, k)| k)
}

/// Checks every file, each as its kind; the error lists every file that failed.
pub fn run_files(a: FilesArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let mut files = a.files;
    let mut kind = a.kind;
    // The older form: `check <kind> <file>`.
    if kind.is_none()
        && files.len() == 2
        && !std::path::Path::new(&files[0]).exists()
        && let Ok(k) = Kind::from_str(&files[0], true)
    {
        kind = Some(k);
        files.remove(0);
    }
    let mut failed = Vec::new();
    for f in files {
        let file = PathBuf::from(&f);
        let Some(kind) = kind.or_else(|| kind_of(&file)) else {
            failed.push(format!("{f}: cannot tell which service it is for from its name; give --kind"));
            continue;
        };
        if let Err(e) = run(CheckArgs { kind, file }, out) {
            failed.push(format!("{f}: {e}"));
        }
    }
    if failed.is_empty() { Ok(()) } else { anyhow::bail!("{}", failed.join("\n")) }
}

/// Checks the file; an error names every problem found.
pub fn run(a: CheckArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", a.file.display()))?;
    let name = a.file.display().to_string();
    let env = |k: &str| std::env::var(k).ok();
    let what = match a.kind {
        Kind::Alerts => {
            let rules = sluice_alerting::rules::parse(&text, &name)?;
            format!("{} rules", rules.len())
        }
        Kind::Alerting => {
            let c = sluice_alerting::AlertingConfig::load(Some(&text), None, &env)?;
            format!("{} rules, {} routes, {} receivers", c.rules.len(), c.routes.len(), c.receivers.len())
        }
        Kind::Dispatcher => {
            sluice_dispatcher::DispatcherConfig::load(Some(&text), &env)?;
            "dispatcher config".into()
        }
        Kind::Collector => {
            sluice_collector::CollectorConfig::load(Some(&text), &env)?;
            "collector config".into()
        }
        Kind::Signal => {
            sluice_signal::SignalConfig::load(Some(&text), &env)?;
            "signal config".into()
        }
        Kind::Execution => {
            sluice_execution::ExecutionConfig::load(Some(&text), &env)?;
            "execution config".into()
        }
    };
    writeln!(out, "{name}: ok ({what})")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_rules_file_names_each_line_and_a_good_one_passes() {
        let dir = std::env::temp_dir().join(format!("sluice-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[[rule]]\nname = \"X\"\nlast = \"m{a=\"\nabove = 1\nseverity = \"warning\"\nsummary = \"s\"\n").unwrap();
        let e = run(CheckArgs { kind: Kind::Alerts, file: bad }, &mut Vec::new()).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("rule \"X\""), "{e}");
        let good = dir.join("good.toml");
        std::fs::write(&good, sluice_alerting::rules::SHIPPED).unwrap();
        let mut out = Vec::new();
        run(CheckArgs { kind: Kind::Alerts, file: good }, &mut out).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("ok ("));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn many_files_are_checked_each_as_its_name_says_and_every_failure_is_named() {
        let dir = std::env::temp_dir().join(format!("sluice-check-many-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("dispatcher.prod.toml");
        std::fs::write(&good, "listen = '0.0.0.0:50051'\n").unwrap();
        let bad = dir.join("collector.toml");
        std::fs::write(&bad, "bogus_key = 1\n").unwrap();
        let odd = dir.join("settings.toml");
        std::fs::write(&odd, "").unwrap();
        let s = |p: &PathBuf| p.display().to_string();
        let mut out = Vec::new();
        let e = run_files(FilesArgs { kind: None, files: vec![s(&good), s(&bad), s(&odd)] }, &mut out).unwrap_err().to_string();
        assert!(String::from_utf8(out).unwrap().contains("dispatcher.prod.toml: ok (dispatcher config)"));
        assert!(e.contains("collector.toml: ") && e.contains("bogus_key"), "{e}");
        assert!(e.contains("settings.toml: cannot tell which service"), "{e}");
        // --kind for a name that says nothing, and the older form.
        run_files(FilesArgs { kind: Some(Kind::Dispatcher), files: vec![s(&odd)] }, &mut Vec::new()).unwrap();
        run_files(FilesArgs { kind: None, files: vec!["dispatcher".into(), s(&good)] }, &mut Vec::new()).unwrap();
        assert_eq!(kind_of(std::path::Path::new("/x/alerting.toml")).map(|k| format!("{k:?}")), Some("Alerting".into()));
        assert_eq!(kind_of(std::path::Path::new("alerts.toml")).map(|k| format!("{k:?}")), Some("Alerts".into()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
