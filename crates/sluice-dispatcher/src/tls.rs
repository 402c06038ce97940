//! TLS on the gRPC port, and client certificates as an alternative credential to
//! bearer tokens: a client is named by the SHA-256 of the certificate it presents
//! (`cert_sha256` in `[[clients]]`), after the certificate has been verified
//! against the configured client CA.

use std::path::PathBuf;

use serde::Deserialize;
use tonic::Request;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::ConfigError;

/// `[tls]`: the server's certificate and key (PEM), and the CA that signs client
/// certificates. Without a client CA no certificate is asked for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
}

fn read(field: &str, path: &PathBuf) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::Invalid(format!("tls.{field}: cannot read {}: {e}", path.display())))
}

/// The server side of TLS. A client certificate is optional at the handshake
/// (callers with a bearer token need none), but one that is presented must be
/// signed by the client CA.
pub(crate) fn server_config(cfg: &TlsConfig) -> Result<ServerTlsConfig, ConfigError> {
    let identity = Identity::from_pem(read("cert_file", &cfg.cert_file)?, read("key_file", &cfg.key_file)?);
    let mut tls = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &cfg.client_ca_file {
        tls = tls.client_ca_root(Certificate::from_pem(read("client_ca_file", ca)?)).client_auth_optional(true);
    }
    Ok(tls)
}

/// The verified client certificate of the connection (DER), if it presented one.
pub(crate) fn client_cert<T>(req: &Request<T>) -> Option<Vec<u8>> {
    req.peer_certs().and_then(|certs| certs.first().map(|c| c.to_vec()))
}
