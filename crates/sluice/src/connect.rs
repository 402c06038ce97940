//! Connections the command line makes, with the credentials it is given: a bearer
//! token for the dispatcher (`--token-file`, `SLUICE_TOKEN_FILE`) and NATS logins
//! from `SLUICE_NATS_*`, like every service.

use std::path::Path;

use anyhow::Context;
use sluice_proto::dispatcher::v1::dispatcher_client::DispatcherClient;
use sluice_service::credentials::{Bearer, NatsAuth};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A dispatcher client that presents the token, if any.
pub type Dispatcher = DispatcherClient<InterceptedService<Channel, Bearer>>;

/// Connects to the dispatcher at `url`, with the token in `token_file`.
pub async fn dispatcher(url: &str, token_file: Option<&Path>) -> anyhow::Result<Dispatcher> {
    let token = Bearer::from_file(token_file)?;
    let ch = Channel::from_shared(url.to_owned()).with_context(|| format!("dispatcher address {url}"))?.connect().await?;
    Ok(DispatcherClient::with_interceptor(ch, token))
}

/// Connects to NATS at `url` with the `SLUICE_NATS_*` credentials, if any.
pub async fn nats(url: &str) -> anyhow::Result<async_nats::Client> {
    let mut auth = NatsAuth::default();
    auth.apply_env(&|k| std::env::var(k).ok());
    let client = auth.options().await?.connect(url).await.map_err(|e| anyhow::anyhow!("cannot reach NATS at {url}: {e}"))?;
    Ok(client)
}
