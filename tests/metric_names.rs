//! Every metric that the shipped alert rules (`config/alerts.toml`), the
//! Prometheus rules (`deploy/prometheus/alerts.yml`) and the Grafana dashboard
//! (`deploy/grafana/sluice.json`) name is one the services really export: each
//! service is started in-process and its `/metrics` read. A renamed metric
//! fails here, not in a user's silent dashboard.

use std::collections::BTreeSet;

use sluice::stack::stack;
use sluice_sim::SimConfig;

fn root(path: &str) -> String {
    let p = sluice_testkit::repo_root().join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Sample names a `/metrics` text declares (`# TYPE` lines), as queries see them.
fn exported(text: &str, into: &mut BTreeSet<String>) {
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
        match kind {
            "counter" => {
                into.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    into.insert(format!("{name}{s}"));
                }
            }
            _ => {
                into.insert(name.to_owned());
            }
        }
    }
}

/// `sluice_…` identifiers in a text.
fn named(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let starts = text.is_char_boundary(0)
            && bytes[i..].starts_with(&['s', 'l', 'u', 'i', 'c', 'e', '_'])
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == '_'));
        if starts {
            let mut j = i;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == '_') {
                j += 1;
            }
            out.insert(bytes[i..j].iter().collect());
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_metric_a_rule_or_dashboard_names_is_exported() {
    let s = stack(SimConfig::shipped()).await.unwrap();
    let mut ccfg = s.collector_config().unwrap();
    ccfg.private.push(s.private_stream(sluice_domain::Exchange::Upbit, "demo"));
    let collector = sluice_collector::start(ccfg, s.stop.clone()).await.unwrap();
    let mut scfg = sluice_signal::SignalConfig::load(None, &|_| None).unwrap();
    scfg.nats_url = s.nats.url();
    scfg.ops_listen = "127.0.0.1:0".parse().unwrap();
    scfg.cadence.every_ms = 500;
    let signal = sluice_signal::start(scfg, s.stop.clone()).await.unwrap();
    let execution = sluice_execution::start(s.execution_config(None, "paper").unwrap(), s.stop.clone()).await.unwrap();
    let alerting = sluice_alerting::start(
        s.alerting_config(None, &[("SLUICE_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/".into())]).unwrap(),
        s.stop.clone(),
    )
    .await
    .unwrap();
    // An order refused by risk (far above the order notional limit), so the
    // denial counter has a series; every other family is created at zero by
    // its service or appears with the traffic of the first seconds.
    let mut exec =
        sluice_proto::execution::v1::execution_client::ExecutionClient::connect(format!("http://{}", execution.grpc_addr)).await.unwrap();
    let http = reqwest::Client::new();
    let mut all = BTreeSet::new();
    let rules = sluice_alerting::rules::parse(sluice_alerting::rules::SHIPPED, "config/alerts.toml").unwrap();
    let mut wanted: Vec<(String, String)> = rules
        .iter()
        .flat_map(|r| {
            r.expr.metrics().into_iter().filter(|m| *m != "up").map(|m| ("config/alerts.toml".to_owned(), m.to_owned())).collect::<Vec<_>>()
        })
        .collect();
    for file in ["deploy/prometheus/alerts.yml", "deploy/grafana/sluice.json"] {
        wanted.extend(named(&root(file)).into_iter().map(|m| (file.to_owned(), m)));
    }
    assert!(wanted.len() > 30, "{wanted:?}");
    let end = std::time::Instant::now() + std::time::Duration::from_secs(40);
    let missing = loop {
        let _ = exec
            .submit_order(sluice_proto::execution::v1::SubmitOrderRequest {
                account: "binance/demo".into(),
                symbol: "BTC-USDT".into(),
                side: sluice_proto::execution::v1::Side::Buy as i32,
                r#type: sluice_proto::execution::v1::OrderType::Limit as i32,
                quantity: "1".into(),
                price: "65000".into(),
                ..Default::default()
            })
            .await;
        all.clear();
        for addr in [s.dispatcher.ops_addr, collector.ops_addr, signal.ops_addr, execution.ops_addr, alerting.ops_addr] {
            let text = http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
            exported(&text, &mut all);
        }
        let missing: Vec<(String, String)> = wanted.iter().filter(|(_, m)| !all.contains(m)).cloned().collect();
        if missing.is_empty() || std::time::Instant::now() > end {
            break missing;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    // The naming scheme: sluice_<service>_<what>[_<unit>].
    for name in &all {
        let service = name.split('_').nth(1).unwrap_or("");
        assert!(["dispatcher", "collector", "signal", "execution", "alerting"].contains(&service), "{name} is outside the naming scheme");
    }
    assert!(missing.is_empty(), "named but not exported: {missing:?}\nexported: {all:?}");
    s.stop.cancel();
}
