//! Client identity and permissions, from outside: the real `sluice-dispatcher`
//! binary with configured clients (tokens from a file and from the environment),
//! called over gRPC; its log is read afterwards for any secret. And client
//! certificates over TLS, in-process.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Setup, harness, req, sim_env, temp_file};
use sha2::{Digest, Sha256};
use sluice_domain::Exchange;
use sluice_proto::dispatcher::v1::dispatcher_client::DispatcherClient;
use sluice_proto::dispatcher::v1::{GetBudgetsRequest, GetClusterRequest, MintStreamAuthRequest, Priority};
use sluice_sim::SimConfig;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const ROUTER_TOKEN: &str = "router-7c1d9e2f4a6b8c0d1e3f5a7b";
const MD_TOKEN: &str = "md-script-93b1c5d7e9f1a3b5c7d9";

type Authed = DispatcherClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
struct Bearer(Option<&'static str>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = self.0 {
            req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().map_err(|_| tonic::Status::internal("token"))?);
        }
        Ok(req)
    }
}

struct Dispatcher {
    child: Child,
    log: std::path::PathBuf,
    grpc: String,
    ops: String,
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for c in s.chars() {
        match (esc, c) {
            (_, '\u{1b}') => esc = true,
            (true, c) if c.is_ascii_alphabetic() => esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

async fn spawn(config: &str, env: &[(String, String)]) -> Dispatcher {
    let cfg = temp_file(config);
    let log = std::env::temp_dir().join(format!("sluice-clients-{}-{}.log", std::process::id(), uuid::Uuid::new_v4()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-dispatcher"));
    cmd.arg("--config").arg(&cfg.0).env("RUST_LOG", "debug").env("NO_COLOR", "1").stdout(Stdio::null());
    cmd.stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let mut d = Dispatcher { child, log, grpc: String::new(), ops: String::new() };
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let text = strip_ansi(&std::fs::read_to_string(&d.log).unwrap_or_default());
        if let Some(line) = text.lines().find(|l| l.contains("dispatcher serving")) {
            let addr = |key: &str| line.split_whitespace().find_map(|w| w.strip_prefix(key)).unwrap().to_owned();
            (d.grpc, d.ops) = (format!("http://{}", addr("grpc_addr=")), addr("ops_addr="));
            // Keep the config file until the process has read it.
            drop(cfg);
            return d;
        }
        assert!(Instant::now() < end, "the dispatcher did not start:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn client(d: &Dispatcher, token: Option<&'static str>) -> Authed {
    let ch = Channel::from_shared(d.grpc.clone()).unwrap().connect().await.unwrap();
    DispatcherClient::with_interceptor(ch, Bearer(token))
}

fn order() -> sluice_proto::dispatcher::v1::CallRequest {
    sluice_proto::dispatcher::v1::CallRequest {
        account: "demo".into(),
        body: br#"{"market":"KRW-BTC","side":"bid","volume":"0.0001","price":"50000000","ord_type":"limit"}"#.to_vec(),
        ..req("upbit", "POST", "/v1/orders", "")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_gets_its_grant_and_nothing_more_and_no_secret_is_logged() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let sim_cfg = SimConfig::load(&[]).unwrap();
    let sim = sluice_sim::start(sim_cfg.clone(), stop.clone()).await.unwrap();
    let router_file = temp_file(&format!("{ROUTER_TOKEN}\n"));
    let mut config = format!(
        "listen = '127.0.0.1:0'\nops_listen = '127.0.0.1:0'\ndrain_grace_ms = 0\n\n\
         [[clients]]\nname = 'router'\ntoken_file = '{}'\naccounts = ['upbit/demo']\n\n\
         [[clients]]\nname = 'md'\ntoken_env = 'MD_TOKEN'\ncalls = ['call', 'read']\nclasses = ['market_data', 'backfill']\n\
         endpoints = ['GET /v1/*']\n\n[base_urls]\n",
        router_file.0.display()
    );
    for ex in Exchange::ALL {
        config.push_str(&format!("{ex} = '{}'\n", sim.base_url(ex)));
    }
    let mut env = sim_env(&sim_cfg);
    env.push(("MD_TOKEN".into(), MD_TOKEN.into()));
    let d = spawn(&config, &env).await;

    // The router may place orders on its account.
    let mut router = client(&d, Some(ROUTER_TOKEN)).await;
    let placed = router.call(order()).await.unwrap().into_inner();
    assert_eq!(placed.status, 201, "{}", String::from_utf8_lossy(&placed.body));

    // No token, a wrong one: UNAUTHENTICATED, whatever is asked.
    for token in [None, Some("not-a-known-token-at-all")] {
        let mut c = client(&d, token).await;
        let e = c.call(req("upbit", "GET", "/v1/ticker", "markets=KRW-BTC")).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        assert_eq!(c.get_cluster(GetClusterRequest {}).await.unwrap_err().code(), Code::Unauthenticated);
    }

    // A foreign account, configured or not: PERMISSION_DENIED (never NOT_FOUND,
    // which would tell the client which accounts exist).
    for account in ["bad", "nobody"] {
        let e = router.call(sluice_proto::dispatcher::v1::CallRequest { account: account.into(), ..order() }).await.unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::PermissionDenied, format!("client 'router' may not use account upbit/{account}").as_str())
        );
    }
    let e = router.call(sluice_proto::dispatcher::v1::CallRequest { exchange: "bybit".into(), ..order() }).await.unwrap_err();
    assert_eq!(e.message(), "client 'router' may not use account bybit/demo");

    // The market-data script: tickers yes; orders, the order class, private
    // stream logins no.
    let mut md = client(&d, Some(MD_TOKEN)).await;
    let t = md.call(req("upbit", "GET", "/v1/ticker", "markets=KRW-BTC")).await.unwrap().into_inner();
    assert_eq!(t.status, 200);
    let denied = [
        (md.call(order()).await.unwrap_err(), "client 'md' may not use account upbit/demo"),
        (
            md.call(sluice_proto::dispatcher::v1::CallRequest { account: String::new(), priority: Priority::MarketData as i32, ..order() })
                .await
                .unwrap_err(),
            "client 'md' may not call POST /v1/orders on upbit",
        ),
        (
            md.call(sluice_proto::dispatcher::v1::CallRequest {
                priority: Priority::Order as i32,
                ..req("upbit", "GET", "/v1/ticker", "markets=KRW-BTC")
            })
            .await
            .unwrap_err(),
            "client 'md' may not use priority class order",
        ),
        (
            md.mint_stream_auth(MintStreamAuthRequest { exchange: "upbit".into(), account: "demo".into() }).await.unwrap_err(),
            "client 'md' may not call MintStreamAuth",
        ),
    ];
    for (e, message) in denied {
        assert_eq!((e.code(), e.message()), (Code::PermissionDenied, message));
    }
    // Budgets: each sees its exchanges, and of account budgets only its own.
    let seen = |r: sluice_proto::dispatcher::v1::GetBudgetsResponse| {
        r.buckets.iter().filter(|b| b.scope == "account").map(|b| format!("{}/{}", b.exchange, b.scope_key)).collect::<Vec<_>>()
    };
    assert!(seen(md.get_budgets(GetBudgetsRequest::default()).await.unwrap().into_inner()).is_empty());
    assert_eq!(seen(router.get_budgets(GetBudgetsRequest::default()).await.unwrap().into_inner()), vec!["upbit/demo".to_owned()]);

    // Counted per client in the metrics.
    let metrics = reqwest_get(&format!("http://{}/metrics", d.ops)).await;
    for line in [
        r#"sluice_dispatcher_client_refused_total{client="unknown",reason="unauthenticated"} 4"#,
        r#"sluice_dispatcher_client_refused_total{client="md",reason="permission_denied"} 4"#,
        r#"sluice_dispatcher_client_refused_total{client="router",reason="permission_denied"} 3"#,
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }

    // The log names the clients and what they were refused, and holds no secret.
    let log = strip_ansi(&std::fs::read_to_string(&d.log).unwrap());
    assert!(log.contains("client=md") && log.contains("may not call MintStreamAuth"), "{log}");
    let mut secrets = vec![ROUTER_TOKEN.to_owned(), MD_TOKEN.to_owned(), "not-a-known-token-at-all".to_owned()];
    for a in &sim_cfg.accounts {
        secrets.push(a.secret.clone());
        secrets.push(a.api_key.clone());
    }
    for s in secrets {
        assert!(!log.contains(&s), "the log holds a secret");
    }
}

async fn reqwest_get(url: &str) -> String {
    let client = sluice_service::http_client::builder().build().unwrap();
    client.get(url).send().await.unwrap().text().await.unwrap()
}

/// A CA, a server certificate for 127.0.0.1 and client certificates.
struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        Pki { ca: rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap() }
    }

    /// (certificate PEM, key PEM, certificate DER).
    fn issue(&self, names: &[&str]) -> (String, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

#[tokio::test]
async fn a_client_certificate_is_a_credential_too() {
    let pki = Pki::new("sluice test CA");
    let (server_cert, server_key, _) = pki.issue(&["127.0.0.1", "localhost"]);
    let (client_cert, client_key, client_der) = pki.issue(&["execution.sluice"]);
    let stranger = Pki::new("another CA").issue(&["execution.sluice"]);
    let files = [temp_file(&server_cert), temp_file(&server_key), temp_file(&pki.ca.pem())];
    let fingerprint = hex::encode(Sha256::digest(&client_der));
    let token_digest = hex::encode(Sha256::digest(ROUTER_TOKEN.as_bytes()));
    let (cert_path, key_path, ca_path) = (files[0].0.clone(), files[1].0.clone(), files[2].0.clone());
    let h = harness(Setup {
        tweak: Box::new(move |c| {
            c.tls = Some(sluice_dispatcher::tls::TlsConfig { cert_file: cert_path, key_file: key_path, client_ca_file: Some(ca_path) });
            c.clients = vec![
                toml::from_str(&format!("name = 'execution'\ncert_sha256 = '{fingerprint}'\naccounts = ['*']")).unwrap(),
                toml::from_str(&format!("name = 'router'\ntoken_sha256 = '{token_digest}'")).unwrap(),
            ];
        }),
        ..Setup::default()
    })
    .await;
    let url = format!("https://{}", h.dispatcher.grpc_addr);
    let connect = |identity: Option<(String, String)>, token: Option<&'static str>| {
        let url = url.clone();
        let ca = pki.ca.pem();
        async move {
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
            if let Some((c, k)) = identity {
                tls = tls.identity(Identity::from_pem(c, k));
            }
            let ch = Channel::from_shared(url).expect("a valid URL").tls_config(tls)?.connect().await?;
            Ok::<Authed, tonic::transport::Error>(DispatcherClient::with_interceptor(ch, Bearer(token)))
        }
    };
    let ticker = || req("upbit", "GET", "/v1/ticker", "markets=KRW-BTC");

    // Named by its certificate, with its grant (every account).
    let mut exec = connect(Some((client_cert.clone(), client_key.clone())), None).await.unwrap();
    assert_eq!(exec.call(ticker()).await.unwrap().into_inner().status, 200);
    assert_eq!(exec.call(order()).await.unwrap().into_inner().status, 201);
    // A token over TLS without a certificate still works, within its grant.
    let mut router = connect(None, Some(ROUTER_TOKEN)).await.unwrap();
    assert_eq!(router.call(ticker()).await.unwrap().into_inner().status, 200);
    assert_eq!(router.call(order()).await.unwrap_err().code(), Code::PermissionDenied);
    // Neither: UNAUTHENTICATED.
    let mut nobody = connect(None, None).await.unwrap();
    assert_eq!(nobody.call(ticker()).await.unwrap_err().code(), Code::Unauthenticated);
    // A certificate from another CA does not get through the handshake.
    let refused = match connect(Some((stranger.0, stranger.1)), None).await {
        Err(_) => true,
        Ok(mut c) => c.call(ticker()).await.is_err(),
    };
    assert!(refused, "a certificate from an unknown CA was accepted");
    drop(files);
}
