//! The only place exchange credentials live. Accounts come from mounted files (a
//! Kubernetes Secret: `<dir>/<exchange>/<account>/{api_key,secret,passphrase}`)
//! and from environment variables (`SLUICE_<EXCHANGE>_<ACCOUNT>_API_KEY`,
//! `_SECRET`, `_PASSPHRASE`). Callers name an account; a secret never leaves here,
//! and errors name what is missing, never a value.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use sluice_domain::Exchange;
use sluice_exchange::sign::Credentials;

/// Why an account cannot sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Names only the account asked for: which accounts exist is not the
    /// caller's business (the dispatcher's startup log lists them).
    #[error("no account '{account}' for {exchange}")]
    NotFound { exchange: Exchange, account: String },
    #[error("account '{account}' for {exchange} has no {missing}")]
    Incomplete { exchange: Exchange, account: String, missing: &'static str },
}

#[derive(Default)]
struct Parts {
    api_key: Option<String>,
    secret: Option<String>,
    passphrase: Option<String>,
}

enum Entry {
    Ready(Arc<Credentials>),
    Incomplete(&'static str),
}

/// Named accounts per exchange.
#[derive(Default)]
pub struct Keyring {
    accounts: BTreeMap<(Exchange, String), Entry>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.accounts.keys().map(|(e, a)| format!("{e}/{a}")).collect();
        f.debug_struct("Keyring").field("accounts", &names).finish()
    }
}

/// Account names are case-insensitive; `_` and `-` are the same (environment
/// variable names cannot hold `-`).
pub fn normalize_account(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace('_', "-")
}

fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

impl Keyring {
    /// Loads accounts from `dir` (if given) and from `env` (a list of variables).
    pub fn load(dir: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> std::io::Result<Self> {
        let mut parts: BTreeMap<(Exchange, String), Parts> = BTreeMap::new();
        if let Some(dir) = dir {
            for ex in Exchange::ALL {
                let exdir = dir.join(ex.as_str());
                let Ok(entries) = std::fs::read_dir(&exdir) else { continue };
                for entry in entries {
                    let entry = entry?;
                    // Kubernetes projects secrets through `..data` symlinks; skip hidden entries.
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') || !entry.path().is_dir() {
                        continue;
                    }
                    let p = parts.entry((ex, normalize_account(&name))).or_default();
                    p.api_key = read_trimmed(&entry.path().join("api_key")).or(p.api_key.take());
                    p.secret = read_trimmed(&entry.path().join("secret")).or(p.secret.take());
                    p.passphrase = read_trimmed(&entry.path().join("passphrase")).or(p.passphrase.take());
                }
            }
        }
        for (k, v) in env {
            let Some(rest) = k.strip_prefix("SLUICE_") else { continue };
            let Some((ex, rest)) = rest.split_once('_') else { continue };
            let Ok(ex) = ex.parse::<Exchange>() else { continue };
            let (account, field) = if let Some(a) = rest.strip_suffix("_API_KEY") {
                (a, 0)
            } else if let Some(a) = rest.strip_suffix("_SECRET") {
                (a, 1)
            } else if let Some(a) = rest.strip_suffix("_PASSPHRASE") {
                (a, 2)
            } else {
                continue;
            };
            if account.is_empty() || v.trim().is_empty() {
                continue;
            }
            let p = parts.entry((ex, normalize_account(account))).or_default();
            let value = Some(v.trim().to_owned());
            match field {
                0 => p.api_key = value,
                1 => p.secret = value,
                _ => p.passphrase = value,
            }
        }
        let accounts = parts
            .into_iter()
            .map(|((ex, name), p)| {
                let entry = match (p.api_key, p.secret) {
                    (None, _) => Entry::Incomplete("api key"),
                    (_, None) => Entry::Incomplete("secret"),
                    (Some(_), Some(_)) if ex == Exchange::Okx && p.passphrase.is_none() => Entry::Incomplete("passphrase"),
                    (Some(k), Some(s)) => Entry::Ready(Arc::new(Credentials::new(k, s, p.passphrase))),
                };
                ((ex, name), entry)
            })
            .collect();
        Ok(Keyring { accounts })
    }

    /// The credentials of `account` on `exchange`.
    pub fn get(&self, exchange: Exchange, account: &str) -> Result<Arc<Credentials>, KeyError> {
        let name = normalize_account(account);
        match self.accounts.get(&(exchange, name.clone())) {
            Some(Entry::Ready(c)) => Ok(c.clone()),
            Some(Entry::Incomplete(missing)) => Err(KeyError::Incomplete { exchange, account: name, missing }),
            None => Err(KeyError::NotFound { exchange, account: name }),
        }
    }

    /// Configured account names, for startup logs.
    pub fn names(&self) -> Vec<String> {
        self.accounts.keys().map(|(e, a)| format!("{e}/{a}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn environment_accounts() {
        let k = Keyring::load(
            None,
            env(&[
                ("SLUICE_UPBIT_MAIN_API_KEY", "ak"),
                ("SLUICE_UPBIT_MAIN_SECRET", "sk"),
                ("SLUICE_OKX_HEDGE_BOT_API_KEY", "ok"),
                ("SLUICE_OKX_HEDGE_BOT_SECRET", "os"),
                ("SLUICE_BYBIT_HALF_API_KEY", "bk"),
                ("SLUICE_DISPATCHER_LISTEN", "x"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert!(k.get(Exchange::Upbit, "Main").is_ok());
        assert_eq!(
            k.get(Exchange::Okx, "hedge-bot").unwrap_err(),
            KeyError::Incomplete { exchange: Exchange::Okx, account: "hedge-bot".into(), missing: "passphrase" }
        );
        assert_eq!(k.get(Exchange::Bybit, "half").unwrap_err().to_string(), "account 'half' for bybit has no secret");
        let e = k.get(Exchange::Upbit, "other").unwrap_err();
        assert_eq!(e.to_string(), "no account 'other' for upbit");
    }

    #[test]
    fn mounted_secret_files() {
        let dir = std::env::temp_dir().join(format!("sluice-keyring-{}", std::process::id()));
        let acct = dir.join("binance").join("desk1");
        std::fs::create_dir_all(&acct).unwrap();
        std::fs::write(acct.join("api_key"), "file-key\n").unwrap();
        std::fs::write(acct.join("secret"), "file-secret\n").unwrap();
        std::fs::create_dir_all(dir.join("binance").join("..data")).unwrap();
        let k = Keyring::load(Some(&dir), Vec::new()).unwrap();
        let c = k.get(Exchange::Binance, "desk1").unwrap();
        assert_eq!(c.expose_api_key(), "file-key", "trailing newline trimmed");
        assert_eq!(k.names(), vec!["binance/desk1".to_owned()]);
        let dbg = format!("{k:?} {c:?}");
        assert!(!dbg.contains("file-secret") && !dbg.contains("file-key"), "{dbg}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
