//! The pipeline with every service as its own process (the built binaries,
//! each with its config file and log, as `scripts/up` runs them), against a
//! test NATS and the simulator: market data flows on NATS, the signal service
//! makes signals from it, and one trace, received by an OTLP receiver inside the
//! test, spans the collector, signal, execution and dispatcher processes down
//! to the simulator call. (The offline model mostly says HOLD on the simulated
//! market, so a real, traced signal is republished as a confident BUY with its
//! own headers: every hop of the trace is the services' own.)

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use sluice::process::{Service, binary};
use sluice::stack::sim_key_env;
use sluice_domain::Exchange;
use sluice_proto::signal::v1 as pb;
use sluice_sim::SimConfig;
use sluice_testkit::Nats;
use sluice_testkit::otlp::Receiver;
use tokio_util::sync::CancellationToken;

fn env(pairs: &[(&str, String)], common: &[(String, String)]) -> Vec<(String, String)> {
    common.iter().cloned().chain(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone()))).collect()
}

/// Starts `bin` and waits for its `marker` line; returns it and the values of `keys` there.
async fn start(name: &str, bin: &str, text: &str, env: &[(String, String)], marker: &str, keys: &[&str]) -> (Service, Vec<String>) {
    let path = binary(bin, &format!("SLUICE_{}_BIN", name.to_ascii_uppercase())).unwrap();
    let mut s = Service::spawn(name, &path, text, env).unwrap();
    match s.logged(marker, keys, Duration::from_secs(60)).await {
        Ok(v) => (s, v),
        Err(e) => panic!("{name}: {e}\n{}", s.log_tail()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_as_its_own_process_and_one_trace_across_them() {
    let nats = Nats::start().await.unwrap();
    let otlp = Receiver::start().await.unwrap();
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let sim_cfg = SimConfig::shipped();
    let keys = sim_key_env(&sim_cfg.accounts);
    let sim = sluice_sim::start(sim_cfg, stop.clone()).await.unwrap();
    // Every process exports its spans here, promptly.
    let common = vec![("SLUICE_OTLP_ENDPOINT".to_owned(), otlp.endpoint.clone()), ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "200".to_owned())];
    let ws = |ex: Exchange, path: &str| format!("ws://{}{path}", sim.addr(ex).unwrap());

    let mut denv = keys.clone();
    denv.extend(env(&[("SLUICE_DISPATCHER_HEARTBEAT_NATS_URL", nats.url())], &common));
    let dtext = format!(
        "listen = '127.0.0.1:0'\nops_listen = '127.0.0.1:0'\ndrain_grace_ms = 0\n[base_urls]\n{}",
        Exchange::ALL.iter().map(|ex| format!("{ex} = '{}'\n", sim.base_url(*ex))).collect::<String>()
    );
    let (_dispatcher, d) = start("dispatcher", "sluice-dispatcher", &dtext, &denv, "dispatcher serving", &["grpc_addr="]).await;
    let dispatcher_url = format!("http://{}", d[0]);

    let cenv = env(
        &[
            ("SLUICE_COLLECTOR_NATS_URL", nats.url()),
            ("SLUICE_COLLECTOR_DISPATCHER_URL", dispatcher_url.clone()),
            ("SLUICE_COLLECTOR_OPS_LISTEN", "127.0.0.1:0".into()),
            ("SLUICE_COLLECTOR_UPBIT_URL", ws(Exchange::Upbit, "/websocket/v1")),
            ("SLUICE_COLLECTOR_BYBIT_URL", ws(Exchange::Bybit, "/v5/public/spot")),
            ("SLUICE_COLLECTOR_BYBIT_LINEAR_URL", ws(Exchange::Bybit, "/v5/public/linear")),
            ("SLUICE_COLLECTOR_BINANCE_URL", ws(Exchange::Binance, "/stream")),
            ("SLUICE_COLLECTOR_OKX_URL", ws(Exchange::Okx, "/ws/v5/public")),
            ("SLUICE_COLLECTOR_UPBIT_PRIVATE_URL", ws(Exchange::Upbit, "/websocket/v1/private")),
            ("SLUICE_COLLECTOR_BYBIT_PRIVATE_URL", ws(Exchange::Bybit, "/v5/private")),
        ],
        &common,
    );
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut trades = client.subscribe("md.upbit.trade.>").await.unwrap();
    let mut signals = client.subscribe("signal.upbit.BTC-KRW").await.unwrap();
    let (_collector, _) = start("collector", "sluice-collector", sluice_collector::config::SHIPPED, &cenv, "collector running", &[]).await;
    let first = tokio::time::timeout(Duration::from_secs(30), trades.next()).await.expect("market data on NATS").unwrap();
    assert!(first.headers.as_ref().and_then(|h| h.get("traceparent")).is_some(), "a traced trade");

    let senv = env(
        &[
            ("SLUICE_SIGNAL_NATS_URL", nats.url()),
            ("SLUICE_SIGNAL_OPS_LISTEN", "127.0.0.1:0".into()),
            ("SLUICE_SIGNAL_EVERY_MS", "500".into()),
            // The offline model, whatever the test's own environment holds.
            ("HOLYSHEEP_API_KEY", String::new()),
        ],
        &common,
    );
    let stext = sluice_signal::config::SHIPPED.replace("min_trades = ", "min_trades = 1 # ");
    let (_signal, _) = start("signal", "sluice-signal", &stext, &senv, "signal service running", &[]).await;

    // Live on the simulator; the Upbit order a fixed 1M KRW (5 % of the demo
    // account's equity is over its per-order limit).
    let shipped = sluice_execution::config::SHIPPED;
    let etext = shipped.replace("sizing = { equity_share = \"0.05\" }", "sizing = { fixed_notional = \"1000000\" }");
    assert_ne!(etext, shipped);
    let eenv = env(
        &[
            ("SLUICE_EXECUTION_NATS_URL", nats.url()),
            ("SLUICE_EXECUTION_DISPATCHER_URL", dispatcher_url.clone()),
            ("SLUICE_EXECUTION_LISTEN", "127.0.0.1:0".into()),
            ("SLUICE_EXECUTION_OPS_LISTEN", "127.0.0.1:0".into()),
            ("SLUICE_EXECUTION_MODE", "live".into()),
        ],
        &common,
    );
    let (_execution, _) = start("execution", "sluice-execution", &etext, &eenv, "execution service running", &["grpc_addr="]).await;

    let (headers, real) = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let m = signals.next().await.unwrap();
            if m.headers.as_ref().and_then(|h| h.get("traceparent")).is_some() {
                break (m.headers.clone().unwrap(), pb::Signal::decode(m.payload).unwrap());
            }
        }
    })
    .await
    .expect("a signal made from traced market data");
    let trace = real.traceparent.split('-').nth(1).unwrap().to_owned();
    let buy = pb::Signal { id: format!("{}-buy", real.id), action: pb::Action::Buy as i32, confidence: 0.9, ..real };
    let want: BTreeSet<&str> = ["sluice-collector", "sluice-signal", "sluice-execution", "sluice-dispatcher"].into();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let by_service: HashMap<String, BTreeSet<String>> = loop {
        client.publish_with_headers("signal.upbit.BTC-KRW", headers.clone(), buy.encode_to_vec().into()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut by: HashMap<String, BTreeSet<String>> = HashMap::new();
        for (service, span) in otlp.traced(&trace) {
            by.entry(service).or_default().insert(span.name);
        }
        let upstream = by.get("sluice-dispatcher").is_some_and(|n| n.contains("dispatcher.upstream"));
        if want.iter().all(|s| by.contains_key(*s)) && upstream {
            break by;
        }
        assert!(tokio::time::Instant::now() < deadline, "trace {trace} so far: {by:?}");
    };
    assert!(by_service["sluice-collector"].contains("collector.publish"), "{by_service:?}");
    assert!(by_service["sluice-signal"].contains("signal.decide"), "{by_service:?}");
    assert!(by_service["sluice-execution"].contains("execution.submit"), "{by_service:?}");
    assert!(
        by_service["sluice-dispatcher"].is_superset(&["dispatcher.call", "dispatcher.queue"].map(String::from).into()),
        "{by_service:?}"
    );
    assert!(!sim.orders(Exchange::Upbit, "demo").is_empty(), "the order reached the exchange");
}
