//! Load stays on this machine unless the user says otherwise: exchanges limit
//! and ban by IP address, and a load test against one can get the address banned
//! (and break their terms of use).

use std::net::IpAddr;

use crate::target::host_port;

/// Why a target was refused.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(
        "{0} is not on this machine: load tests go to loopback only. Exchanges limit and ban by IP address; \
         to load a remote target you are allowed to load, pass --allow-remote"
    )]
    Remote(String),
    #[error("{0}: {1}")]
    Resolve(String, String),
    #[error("'{0}' has no host to check")]
    NoHost(String),
}

/// The warning printed when `--allow-remote` lets a remote target through.
pub fn remote_warning(host: &str) -> String {
    format!(
        "warning: {host} is not on this machine. Exchanges limit and ban by IP address: a load test can get this \
         machine's address rate-limited or banned, and their terms of use apply. Go on only with the target's permission."
    )
}

/// `Ok(None)` when every address `url` names is a loopback address;
/// `Ok(Some(warning))` for a remote one when `allow_remote`; an error otherwise.
pub async fn check(url: &str, allow_remote: bool) -> Result<Option<String>, GuardError> {
    let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| GuardError::Resolve(url.to_owned(), e.to_string()))?;
    let (host, port) = host_port(&uri).ok_or_else(|| GuardError::NoHost(url.to_owned()))?;
    let local = match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => {
            let addrs: Vec<_> = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| GuardError::Resolve(host.clone(), format!("the name does not resolve ({e})")))?
                .collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
    };
    match (local, allow_remote) {
        (true, _) => Ok(None),
        (false, true) => Ok(Some(remote_warning(&host))),
        (false, false) => Err(GuardError::Remote(host)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_passes_and_anything_else_needs_allow_remote() {
        for url in ["http://127.0.0.1:8080/x", "ws://[::1]:9/ws", "http://localhost:1/", "http://127.3.4.5/"] {
            assert!(check(url, false).await.unwrap().is_none(), "{url}");
        }
        // TEST-NET addresses: never contacted, only classified.
        let e = check("http://192.0.2.10/api", false).await.unwrap_err();
        assert!(matches!(e, GuardError::Remote(_)));
        assert!(e.to_string().contains("--allow-remote"), "{e}");
        let w = check("https://192.0.2.10/api", true).await.unwrap().unwrap();
        assert!(w.contains("ban") && w.contains("terms"), "{w}");
        assert!(check("http://[2001:db8::1]:80/", false).await.is_err());
    }
}
