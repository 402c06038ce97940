//! The foreign clients in `examples/python/`, run as a user runs them, with
//! code generated from `proto/`: the NATS subscriber decodes each kind of
//! message sluice publishes (market data, a signal, an order, an alert, each
//! encoded here by the services' own Rust types); the dispatcher's and the
//! execution service's gRPC clients call the real services (in-process, on the
//! simulator).

use std::time::Duration;

use prost::Message;
use rust_decimal::Decimal;
use sluice::stack::stack;
use sluice_domain::Exchange;
use sluice_proto::alert::v1 as alert;
use sluice_proto::execution::v1 as exec;
use sluice_proto::execution::v1::execution_client::ExecutionClient;
use sluice_proto::md::v1 as md;
use sluice_proto::signal::v1 as signal;
use sluice_sim::SimConfig;
use sluice_testkit::{Nats, repo_root, run_python_file};

fn example(name: &str) -> std::path::PathBuf {
    repo_root().join("examples/python").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_nats_subscriber_decodes_market_data_signals_orders_and_alerts() {
    let nats = Nats::start().await.unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let source = md::Source { exchange: "upbit".into(), symbol: "BTC/KRW".into(), native: "KRW-BTC".into(), ..Default::default() };
    let messages: Vec<(&str, Vec<u8>)> = vec![
        (
            "md.upbit.trade.BTC-KRW",
            md::Trade { source: Some(source), trade_id: "t1".into(), price: "95000000".into(), qty: "0.01".into(), ..Default::default() }
                .encode_to_vec(),
        ),
        (
            "signal.upbit.BTC-KRW",
            signal::Signal {
                venue: "upbit".into(),
                symbol: "BTC/KRW".into(),
                action: signal::Action::Buy as i32,
                confidence: 0.75,
                model: "offline-trend-v1".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "exec.upbit.demo.order",
            exec::Order {
                client_order_id: "ex-1".into(),
                account: "upbit/demo".into(),
                symbol: "BTC-KRW".into(),
                quantity: "0.01".into(),
                filled_quantity: "0.004".into(),
                status: exec::OrderStatus::PartiallyFilled as i32,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "alert.critical.ExchangeErrorRate",
            alert::Alert {
                name: "ExchangeErrorRate".into(),
                state: alert::AlertState::Firing as i32,
                severity: alert::Severity::Critical as i32,
                annotations: [("summary".to_owned(), "upbit answers 5xx".to_owned())].into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
    ];
    let args = vec!["--nats".into(), nats.url(), "--count".into(), "8".into(), "--timeout".into(), "20".into()];
    let run = tokio::spawn(run_python_file(example("nats_subscriber.py"), args));
    // Published in rounds until the subscriber has had its eight (it may start
    // listening in the middle of a round).
    while !run.is_finished() {
        for (subject, payload) in &messages {
            client.publish(*subject, payload.clone().into()).await.unwrap();
        }
        client.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (ok, text) = run.await.unwrap().unwrap();
    assert!(ok, "{text}");
    for line in [
        "md.upbit.trade.BTC-KRW: trade upbit BTC/KRW 0.01 @ 95000000",
        "signal.upbit.BTC-KRW: signal upbit BTC/KRW ACTION_BUY confidence 0.75 (offline-trend-v1)",
        "exec.upbit.demo.order: order ex-1 upbit/demo BTC-KRW ORDER_STATUS_PARTIALLY_FILLED filled 0.004/0.01",
        "alert.critical.ExchangeErrorRate: alert ExchangeErrorRate ALERT_STATE_FIRING SEVERITY_CRITICAL: upbit answers 5xx",
    ] {
        assert!(text.contains(line), "'{line}' not in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_grpc_clients_call_the_dispatcher_and_the_execution_service() {
    sluice_service::telemetry::init("test");
    let st = stack(SimConfig::shipped()).await.unwrap();
    let _guard = st.stop.clone().drop_guard();
    let addr = st.dispatcher.grpc_addr.to_string();
    let (ok, text) = run_python_file(example("dispatcher_client.py"), vec!["--addr".into(), addr]).await.unwrap();
    assert!(ok, "{text}");
    assert!(text.contains("upbit KRW-BTC ") && text.contains("(HTTP 200"), "{text}");
    assert!(text.contains("budget upbit ip:default ticker: "), "{text}");

    // Execution on paper, with the collector's Upbit market data for its risk checks.
    let mut ccfg = st.collector_config().unwrap();
    ccfg.feeds.retain(|f| f.exchange == Exchange::Upbit);
    let _collector = sluice_collector::start(ccfg, st.stop.clone()).await.unwrap();
    let running = sluice_execution::start(st.execution_config(None, "paper").unwrap(), st.stop.clone()).await.unwrap();
    let (bids, _, _) = st.sim.book(Exchange::Upbit, "KRW-BTC").unwrap();
    // 3 % under the bid (risk allows 5 % from the last trade), so it rests until cancelled.
    let thousand = Decimal::from(1000);
    let price = (bids[0].0 * Decimal::new(97, 2) / thousand).floor() * thousand;
    let args = [
        "--addr",
        &running.grpc_addr.to_string(),
        "--account",
        "upbit/demo",
        "--symbol",
        "BTC-KRW",
        "--price",
        &price.to_string(),
        "--qty",
        "0.001",
    ];
    let (ok, text) = run_python_file(example("execution_client.py"), args.iter().map(|s| s.to_string()).collect()).await.unwrap();
    assert!(ok, "{text}");
    assert!(text.contains("trading state TRADING_STATE_ACTIVE"), "{text}");
    assert!(text.contains("ours among them: True"), "{text}");
    let cid = text.lines().find_map(|l| l.strip_prefix("submitted ")).and_then(|l| l.split(':').next()).expect("an order id").to_owned();
    let mut api = ExecutionClient::connect(format!("http://{}", running.grpc_addr)).await.unwrap();
    let order = api.get_order(exec::GetOrderRequest { client_order_id: cid.clone() }).await.unwrap().into_inner();
    assert_eq!(order.status, exec::OrderStatus::Cancelled as i32, "{order:?}\n{text}");
    assert!(text.contains(&format!("cancel {cid}: ORDER_STATUS_CANCELLED")), "{text}");
}
