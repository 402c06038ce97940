//! Credentials a service presents to others: a bearer token to the dispatcher,
//! and NATS user and password, token, nkey seed or a `.creds` file. Secrets come
//! from files (mounted Kubernetes Secrets) and are never logged: the types here
//! hold paths, and the values only inside the connection options or the gRPC
//! metadata value, whose `Debug` is redacted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use tonic::metadata::{Ascii, MetadataValue};

/// A credential that cannot be used; the message names the file or variable.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read {what} from {path}: {source}")]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
}

fn read_secret(what: &'static str, path: &Path) -> Result<String, CredentialError> {
    let text = std::fs::read_to_string(path).map_err(|source| CredentialError::Read { what, path: path.to_owned(), source })?;
    let text = text.trim().to_owned();
    if text.is_empty() {
        return Err(CredentialError::Invalid(format!("{what} file {} is empty", path.display())));
    }
    Ok(text)
}

/// How a service logs in to NATS (`[nats_auth]`, or `SLUICE_NATS_*`). At most one
/// method; none for a server without authorization.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NatsAuth {
    /// User name, with `password_file`.
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    /// A file holding a token.
    pub token_file: Option<PathBuf>,
    /// A file holding an nkey seed ("SU...").
    pub nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (user JWT and nkey seed, as `nsc` writes it).
    pub credentials_file: Option<PathBuf>,
}

impl NatsAuth {
    /// Applies `SLUICE_NATS_USER`, `_PASSWORD_FILE`, `_TOKEN_FILE`,
    /// `_NKEY_SEED_FILE` and `_CREDENTIALS_FILE` (the same for every service, so
    /// one Secret serves all).
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        let path = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        if let Some(u) = env("SLUICE_NATS_USER").filter(|v| !v.is_empty()) {
            self.user = Some(u);
        }
        self.password_file = path("SLUICE_NATS_PASSWORD_FILE").or(self.password_file.take());
        self.token_file = path("SLUICE_NATS_TOKEN_FILE").or(self.token_file.take());
        self.nkey_seed_file = path("SLUICE_NATS_NKEY_SEED_FILE").or(self.nkey_seed_file.take());
        self.credentials_file = path("SLUICE_NATS_CREDENTIALS_FILE").or(self.credentials_file.take());
    }

    /// Which method is configured, checking that it is complete and alone.
    pub fn validate(&self) -> Result<(), CredentialError> {
        let methods = [
            self.user.is_some() || self.password_file.is_some(),
            self.token_file.is_some(),
            self.nkey_seed_file.is_some(),
            self.credentials_file.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            return Err(CredentialError::Invalid(
                "nats_auth: give one of user + password_file, token_file, nkey_seed_file or credentials_file".into(),
            ));
        }
        if self.user.is_some() != self.password_file.is_some() {
            return Err(CredentialError::Invalid("nats_auth: user and password_file go together".into()));
        }
        Ok(())
    }

    /// Connection options carrying the credential (read from its file now).
    pub async fn options(&self) -> Result<async_nats::ConnectOptions, CredentialError> {
        self.validate()?;
        let o = async_nats::ConnectOptions::new();
        Ok(match (&self.user, &self.password_file, &self.token_file, &self.nkey_seed_file, &self.credentials_file) {
            (Some(user), Some(p), ..) => o.user_and_password(user.clone(), read_secret("NATS password", p)?),
            (_, _, Some(t), _, _) => o.token(read_secret("NATS token", t)?),
            (_, _, _, Some(s), _) => o.nkey(read_secret("NATS nkey seed", s)?),
            (_, _, _, _, Some(c)) => {
                o.credentials_file(c).await.map_err(|source| CredentialError::Read { what: "NATS credentials", path: c.clone(), source })?
            }
            _ => o,
        })
    }
}

/// Adds `authorization: Bearer <token>` to every gRPC call (nothing when the
/// dispatcher is open). `Debug` never shows the token.
#[derive(Clone, Default)]
pub struct Bearer(Option<Arc<MetadataValue<Ascii>>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Bearer([REDACTED])" } else { "Bearer(none)" })
    }
}

impl Bearer {
    /// No credential.
    pub fn none() -> Bearer {
        Bearer(None)
    }

    /// The token in `path` (a mounted Secret), or none without a path.
    pub fn from_file(path: Option<&Path>) -> Result<Bearer, CredentialError> {
        let Some(path) = path else { return Ok(Bearer(None)) };
        let token = read_secret("dispatcher token", path)?;
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}").parse().map_err(|_| {
            CredentialError::Invalid(format!("the dispatcher token in {} holds characters a header cannot carry", path.display()))
        })?;
        value.set_sensitive(true);
        Ok(Bearer(Some(Arc::new(value))))
    }
}

/// Adds the token, and the trace context of the span the call is made in (so a
/// trace follows the call into the dispatcher; nothing when tracing is off).
impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", (**v).clone());
        }
        crate::trace::inject_grpc(&tracing::Span::current(), req.metadata_mut());
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_and_bad_combinations_are_named() {
        let mut a = NatsAuth { token_file: Some("/a".into()), ..NatsAuth::default() };
        a.apply_env(&|k| (k == "SLUICE_NATS_TOKEN_FILE").then(|| "/b".to_owned()));
        assert_eq!(a.token_file, Some(PathBuf::from("/b")));
        a.user = Some("u".into());
        assert!(a.validate().unwrap_err().to_string().contains("give one of"));
        let half = NatsAuth { user: Some("u".into()), ..NatsAuth::default() };
        assert!(half.validate().unwrap_err().to_string().contains("go together"));
    }

    #[test]
    fn a_bearer_token_never_shows_in_debug_and_a_missing_file_is_named() {
        let p = std::env::temp_dir().join(format!("sluice-bearer-{}", std::process::id()));
        std::fs::write(&p, "secret-token-1234567890\n").unwrap();
        let b = Bearer::from_file(Some(&p)).unwrap();
        assert_eq!(format!("{b:?}"), "Bearer([REDACTED])");
        let mut req = tonic::Request::new(());
        req = tonic::service::Interceptor::call(&mut b.clone(), req).unwrap();
        assert_eq!(req.metadata().get("authorization").unwrap().to_str().unwrap(), "Bearer secret-token-1234567890");
        std::fs::remove_file(&p).unwrap();
        let e = Bearer::from_file(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("dispatcher token") && e.contains(&p.display().to_string()), "{e}");
    }
}
