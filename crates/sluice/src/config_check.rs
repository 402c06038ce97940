//! `sluice config check <kind> <file>`: reads a configuration file the way its
//! service would at start and names every problem, so a bad file is found
//! before a deployment rather than by a pod that will not start. A rules file
//! (`alerts`) lists every problem at once, each with its line.

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
pub struct CheckArgs {
    pub kind: Kind,
    pub file: PathBuf,
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
}
