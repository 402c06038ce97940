//! Services present their own credentials: to a nats-server that requires a
//! login, and to a dispatcher that names its clients. The collector publishes
//! market data only with both; a service with a wrong NATS password is refused
//! with an error that says so, and no secret shows in it.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use sluice::replicas::Nats;
use sluice_collector::CollectorConfig;
use sluice_dispatcher::auth::{CallKind, ClientConfig};
use sluice_dispatcher::{DispatcherConfig, Keyring};
use sluice_domain::Exchange;
use sluice_service::credentials::NatsAuth;
use sluice_sim::SimConfig;
use tokio_util::sync::CancellationToken;

const NATS_PASSWORD: &str = "nats-pass-5f0c2a9e71";
const COLLECTOR_TOKEN: &str = "collector-token-3b8e61d4a2f0";

struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn secret_file(text: &str) -> TempFile {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = std::env::temp_dir().join(format!("sluice-cred-{}-{n}", std::process::id()));
    std::fs::write(&p, format!("{text}\n")).unwrap();
    TempFile(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_log_in_to_nats_and_the_dispatcher_with_their_own_credentials() {
    sluice_service::telemetry::init("test");
    let nats = Nats::start_with(&["--user", "sluice", "--pass", NATS_PASSWORD]).await.unwrap();
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let sim_cfg = SimConfig::shipped();
    let sim = sluice_sim::start(sim_cfg.clone(), stop.clone()).await.unwrap();
    let (password, token) = (secret_file(NATS_PASSWORD), secret_file(COLLECTOR_TOKEN));

    // A dispatcher that lets only the collector in, for tokens and snapshots.
    let mut dcfg = DispatcherConfig::load(None, &|_| None).unwrap();
    dcfg.listen = "127.0.0.1:0".parse().unwrap();
    dcfg.ops_listen = "127.0.0.1:0".parse().unwrap();
    dcfg.drain_grace_ms = 0;
    for ex in Exchange::ALL {
        dcfg.base_urls.insert(ex, sim.base_url(ex));
    }
    dcfg.clients = vec![ClientConfig {
        name: "collector".into(),
        token_file: Some(token.0.clone()),
        token_env: None,
        token_sha256: None,
        cert_sha256: None,
        calls: Some(vec![CallKind::Call, CallKind::Acquire]),
        exchanges: None,
        accounts: Vec::new(),
        classes: Some(vec!["market_data".into()]),
        endpoints: Some(vec!["GET /api/v3/depth".into()]),
        exchange_keys: Vec::new(),
    }];
    let dispatcher = sluice_dispatcher::start(dcfg, Keyring::load(None, Vec::new()).unwrap(), stop.clone()).await.unwrap();

    // The collector: Binance books (connect tokens and REST snapshots through the
    // dispatcher), logged in to NATS with a user and a password file.
    let env: HashMap<String, String> = [
        ("SLUICE_COLLECTOR_NATS_URL", nats.url()),
        ("SLUICE_COLLECTOR_DISPATCHER_URL", format!("http://{}", dispatcher.grpc_addr)),
        ("SLUICE_COLLECTOR_DISPATCHER_TOKEN_FILE", token.0.display().to_string()),
        ("SLUICE_COLLECTOR_OPS_LISTEN", "127.0.0.1:0".into()),
        ("SLUICE_COLLECTOR_BINANCE_URL", format!("ws://{}/stream", sim.addr(Exchange::Binance).unwrap())),
        ("SLUICE_NATS_USER", "sluice".into()),
        ("SLUICE_NATS_PASSWORD_FILE", password.0.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut ccfg = CollectorConfig::load(None, &|k| env.get(k).cloned()).unwrap();
    ccfg.private.clear();
    ccfg.feeds.retain(|f| f.exchange == Exchange::Binance);
    let auth = ccfg.nats_auth.clone();
    let watcher = auth.options().await.unwrap().connect(nats.url()).await.unwrap();
    let mut books = watcher.subscribe("md.binance.depth.>").await.unwrap();
    let collector = sluice_collector::start(ccfg, stop.clone()).await.unwrap();
    let live = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(m) = books.next().await {
            let d: sluice_proto::md::v1::BookDepth = prost::Message::decode(m.payload).unwrap();
            if d.state == sluice_proto::md::v1::BookState::Live as i32 && !d.bids.is_empty() {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(live, Ok(true), "no live Binance book: the collector did not get its tokens and snapshot");

    // The same service with a wrong password is refused, and says why.
    let wrong = secret_file("not-the-password");
    let bad = NatsAuth { user: Some("sluice".into()), password_file: Some(wrong.0.clone()), ..NatsAuth::default() };
    let e = bad.options().await.unwrap().connect(nats.url()).await.unwrap_err().to_string();
    assert!(e.to_lowercase().contains("authorization"), "{e}");
    let mut scfg = sluice_signal::SignalConfig::load(None, &|_| None).unwrap();
    scfg.nats_url = nats.url();
    scfg.nats_auth = NatsAuth {
        password_file: Some(std::path::PathBuf::from("/nonexistent/password")),
        user: Some("sluice".into()),
        ..NatsAuth::default()
    };
    let e = sluice_signal::start(scfg, stop.clone()).await.err().expect("a missing password file is an error").to_string();
    assert!(e.contains("/nonexistent/password") && !e.contains(NATS_PASSWORD), "{e}");
    stop.cancel();
    collector.wait().await;
}
