//! The alerting service in-process on a real nats-server, probing the
//! simulator through a real dispatcher, notifying mock Slack, Discord,
//! PagerDuty and webhook receivers over HTTP. What the mocks received is the
//! truth every assertion is checked against.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice::mock_receiver::{Answer, MockReceiver, Received};
use sluice::stack::{Stack, stack};
use sluice_domain::Exchange;
use sluice_proto::alert::v1 as pb;
use sluice_proto::alert::v1::alerting_client::AlertingClient;
use sluice_sim::{Fault, FaultKind, SimConfig};
use sluice_tests::wait_for;

/// Upbit probed every second (ticker, order book, account: three probes);
/// the four receivers on the mock; a group per alert, quick timers.
fn config_text() -> String {
    r#"
service = "alerting-a"
nats_url = "nats://127.0.0.1:4222"
listen = "127.0.0.1:0"
ops_listen = "127.0.0.1:0"
eval_interval = "100ms"
bucket_prefix = "test_alert"

[probes]
interval = "1s"
retry_interval = "500ms"
timeout = "2s"

[[probes.exchange]]
exchange = "upbit"
ticker = "/v1/ticker?markets=KRW-BTC"
orderbook = "/v1/orderbook?markets=KRW-BTC"
accounts = ["demo"]
account_call = "/v1/accounts"

[[route]]
match = 'alertname=~"ExchangeErrorRate|ProbeFailing|HeartbeatMissing|StaleData|PrivateStreamDown"'
receivers = ["webhook", "slack", "discord", "pagerduty"]
group_by = ["alertname", "exchange", "probe", "instance"]
group_wait = "500ms"
group_interval = "3s"
repeat_interval = "1h"

[[receiver]]
name = "webhook"
kind = "webhook"
secret_env = "HOOK_URL"
timeout = "2s"

[[receiver]]
name = "slack"
kind = "slack"
secret_env = "SLACK_URL"
timeout = "2s"

[[receiver]]
name = "discord"
kind = "discord"
secret_env = "DISCORD_URL"
timeout = "2s"

[[receiver]]
name = "pagerduty"
kind = "pagerduty"
secret_env = "PD_KEY"
url = "http://placeholder/pagerduty"
timeout = "2s"

[[inhibit]]
source = 'alertname="ExchangeErrorRate"'
target = 'alertname="ProbeFailing"'
equal = ["exchange"]
"#
    .to_owned()
}

async fn start_alerting(s: &Stack, mock: &MockReceiver, name: &str, inhibit: bool) -> sluice_alerting::Running {
    let mut text = config_text().replace("http://placeholder/pagerduty", &mock.url("pagerduty"));
    if !inhibit {
        text = text.split("[[inhibit]]").next().unwrap().to_owned();
    }
    let env = [
        ("HOOK_URL", mock.url("webhook")),
        ("SLACK_URL", mock.url("slack")),
        ("DISCORD_URL", mock.url("discord")),
        ("PD_KEY", "routing-key-not-logged".to_owned()),
        ("SLUICE_ALERTING_SERVICE", name.to_owned()),
    ];
    let cfg = s.alerting_config(Some(&text), &env).unwrap();
    sluice_alerting::start(cfg, s.stop.clone()).await.unwrap()
}

/// The alert name and status of a webhook body.
fn webhook_of(r: &Received) -> (String, String) {
    let name = r.body["groupLabels"]["alertname"].as_str().unwrap_or("").to_owned();
    (name, r.body["status"].as_str().unwrap_or("").to_owned())
}

fn outage(s: &Stack) {
    s.sim.inject(Exchange::Upbit, Fault { kind: FaultKind::ServerError, count: 1_000_000, group: None });
}

/// Per path, the (alertname, status) of each delivery.
fn deliveries(mock: &MockReceiver) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for r in mock.received().into_iter().filter(|r| (200..300).contains(&r.status)) {
        let key = match r.path.as_str() {
            "webhook" => webhook_of(&r),
            "pagerduty" => {
                (r.body["payload"]["class"].as_str().unwrap_or("").to_owned(), r.body["event_action"].as_str().unwrap_or("").to_owned())
            }
            _ => (String::new(), r.body.to_string()),
        };
        out.entry(r.path.clone()).or_default().push(key);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exchange_answering_500_fires_once_per_receiver_and_resolves_when_healed_with_two_replicas_and_a_flaky_webhook() {
    let s = stack(SimConfig::shipped()).await.unwrap();
    let mock = MockReceiver::start(s.stop.clone()).await.unwrap();
    // The webhook fails twice before it takes the first notification.
    mock.script("webhook", vec![Answer { status: 500, retry_after: None }, Answer { status: 500, retry_after: None }]);
    let a = start_alerting(&s, &mock, "alerting-a", false).await;
    let _b = start_alerting(&s, &mock, "alerting-b", false).await;
    // Healthy first: probes succeed, nothing is notified.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(mock.received().is_empty(), "{:?}", mock.received());

    outage(&s);
    let fault_at = Instant::now();
    // Four groups: the error rate, and each probe's failures.
    wait_for("ExchangeErrorRate and three ProbeFailing at every receiver", Duration::from_secs(30), || {
        let d = deliveries(&mock);
        ["webhook", "slack", "discord", "pagerduty"].iter().all(|p| d.get(*p).is_some_and(|v| v.len() >= 4))
    })
    .await;
    let detect = fault_at.elapsed();
    // Through at least two group intervals of both replicas: nothing more.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let d = deliveries(&mock);
    for path in ["webhook", "slack", "discord", "pagerduty"] {
        assert_eq!(d[path].len(), 4, "{path}: one notification per group, whatever the replicas and retries: {:?}", d[path]);
    }
    let hook = &d["webhook"];
    assert_eq!(hook.iter().filter(|(a, _)| a == "ProbeFailing").count(), 3, "{hook:?}");
    let hook_attempts = mock.received().iter().filter(|r| r.path == "webhook" && r.status == 500).count();
    assert_eq!(hook_attempts, 2, "the two 500s were retried, by one sender");
    // PagerDuty: the group key as dedup key, the routing key in the body only.
    let pd: Vec<Received> = mock.delivered("pagerduty");
    assert!(
        pd.iter()
            .all(|r| r.body["routing_key"] == "routing-key-not-logged" && r.body["dedup_key"].as_str().unwrap().starts_with("sluice-"))
    );

    // The API lists both alerts as firing.
    let mut client = AlertingClient::connect(format!("http://{}", a.grpc_addr)).await.unwrap();
    let alerts = client.list_alerts(pb::ListAlertsRequest { include_resolved: false }).await.unwrap().into_inner().alerts;
    let firing: Vec<&str> = alerts.iter().filter(|x| x.state == pb::AlertState::Firing as i32).map(|x| x.name.as_str()).collect();
    assert!(firing.contains(&"ExchangeErrorRate") && firing.contains(&"ProbeFailing"), "{firing:?}");

    s.sim.clear_faults(Exchange::Upbit);
    let healed_at = Instant::now();
    wait_for("every group resolved at every receiver", Duration::from_secs(30), || {
        let d = deliveries(&mock);
        ["webhook", "slack", "discord", "pagerduty"].iter().all(|p| d.get(*p).is_some_and(|v| v.len() >= 8))
    })
    .await;
    let resolve = healed_at.elapsed();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let d = deliveries(&mock);
    for path in ["webhook", "slack", "discord", "pagerduty"] {
        assert_eq!(d[path].len(), 8, "{path}: each group fired once and resolved once: {:?}", d[path]);
    }
    let hook = &d["webhook"];
    assert_eq!(hook.iter().filter(|(_, st)| st == "resolved").count(), 4, "{hook:?}");
    assert_eq!(d["pagerduty"].iter().filter(|(_, act)| act == "resolve").count(), 4, "{:?}", d["pagerduty"]);
    // Speed lives in `sluice bench alert`; shown with --nocapture for the curious.
    println!("fault to notified at every receiver: {detect:?}; heal to resolved: {resolve:?}");
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silences_mute_inhibition_holds_back_and_retry_after_is_honoured() {
    let s = stack(SimConfig::shipped()).await.unwrap();
    let mock = MockReceiver::start(s.stop.clone()).await.unwrap();
    mock.script("slack", vec![Answer { status: 429, retry_after: Some("2".into()) }]);
    let a = start_alerting(&s, &mock, "alerting-a", true).await;
    let mut client = AlertingClient::connect(format!("http://{}", a.grpc_addr)).await.unwrap();
    // Bad silences are refused with the reason.
    let e = client.create_silence(pb::CreateSilenceRequest { created_by: "ops".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("at least one matcher"), "{}", e.message());
    // Discord muted for this outage's error-rate alert by a silence over HTTP.
    let http = reqwest::Client::new();
    let made: serde_json::Value = http
        .post(format!("http://{}/api/silences", a.ops_addr))
        .body(r#"{"matchers":"alertname=\"ExchangeErrorRate\", exchange=\"upbit\"","duration":"1h","createdBy":"ops","comment":"maintenance"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(made["state"], "active", "{made}");
    let listed = client.list_silences(pb::ListSilencesRequest { include_expired: false }).await.unwrap().into_inner().silences;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].created_by, "ops");

    outage(&s);
    // ProbeFailing fires too, but ExchangeErrorRate inhibits it; and the
    // error-rate alert itself is silenced: nobody is notified.
    wait_for("both alerts firing", Duration::from_secs(30), || {
        let r = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                let mut c = client.clone();
                c.list_alerts(pb::ListAlertsRequest { include_resolved: false }).await.map(|r| r.into_inner().alerts)
            })
        });
        let alerts = r.unwrap_or_default();
        let fired = |n: &str| alerts.iter().find(|x| x.name == n && x.state == pb::AlertState::Firing as i32).cloned();
        match (fired("ExchangeErrorRate"), fired("ProbeFailing")) {
            (Some(e), Some(p)) => !e.silenced_by.is_empty() && !p.inhibited_by.is_empty(),
            _ => false,
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(mock.received().is_empty(), "silenced and inhibited alerts notify nobody: {:?}", mock.received());

    // The silence expires: the error-rate alert notifies; Slack's 429 asks for
    // 2 s, and the next attempt waits for it.
    let id = listed[0].id.clone();
    let expired = client.expire_silence(pb::ExpireSilenceRequest { id }).await.unwrap().into_inner();
    assert_eq!(expired.state, pb::SilenceState::Expired as i32);
    wait_for("the error-rate alert at slack, after its 429", Duration::from_secs(30), || !mock.delivered("slack").is_empty()).await;
    let slack: Vec<Received> = mock.received().into_iter().filter(|r| r.path == "slack").collect();
    assert_eq!(slack[0].status, 429);
    assert!(
        slack[1].at.duration_since(slack[0].at) >= Duration::from_millis(1_900),
        "Retry-After: 2 honoured: {:?}",
        slack[1].at.duration_since(slack[0].at)
    );
    assert!(slack[1].body["text"].as_str().unwrap().contains("ExchangeErrorRate"), "{}", slack[1].body);
    assert!(mock.delivered("webhook").iter().all(|r| webhook_of(r).0 == "ExchangeErrorRate"), "ProbeFailing stays inhibited");

    // The test endpoint goes through every receiver at once.
    let t = client.send_test_alert(pb::SendTestAlertRequest { receivers: vec![] }).await.unwrap().into_inner();
    assert_eq!(t.results.len(), 4);
    assert!(t.results.iter().all(|r| r.ok && !r.detail.contains("routing-key")), "{:?}", t.results);
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_service_is_an_alert_and_a_planned_stop_is_not() {
    use prost::Message;
    let s = stack(SimConfig::shipped()).await.unwrap();
    let mock = MockReceiver::start(s.stop.clone()).await.unwrap();
    let _a = start_alerting(&s, &mock, "alerting-a", true).await;
    let nats = async_nats::connect(s.nats.url()).await.unwrap();
    let beat = |instance: &str, leaving: bool| sluice_proto::ops::v1::Heartbeat {
        service: "collector".into(),
        instance: instance.into(),
        leaving,
        ..Default::default()
    };
    for _ in 0..3 {
        for i in ["dies", "leaves"] {
            nats.publish(format!("heartbeat.collector.{i}"), beat(i, false).encode_to_vec().into()).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    nats.publish("heartbeat.collector.leaves", beat("leaves", true).encode_to_vec().into()).await.unwrap();
    nats.publish("heartbeat.collector.junk", b"not a heartbeat".to_vec().into()).await.unwrap();
    nats.flush().await.unwrap();
    wait_for("HeartbeatMissing for the instance that died", Duration::from_secs(30), || {
        mock.delivered("webhook").iter().any(|r| webhook_of(r) == ("HeartbeatMissing".into(), "firing".into()))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let missing: Vec<String> = mock
        .delivered("webhook")
        .iter()
        .flat_map(|r| r.body["alerts"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["labels"]["instance"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(missing, vec!["dies".to_owned()], "only the silent one; the one that said it was leaving is not missed");
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_feed_and_a_dead_private_stream_fire_and_the_feed_resolves_when_it_speaks_again() {
    let s = stack(SimConfig::shipped()).await.unwrap();
    let mock = MockReceiver::start(s.stop.clone()).await.unwrap();
    let mut ccfg = s.collector_config().unwrap();
    // A quiet market is not a dead connection: the collector keeps its sockets.
    ccfg.idle_ms = 60_000;
    // The "bad" account's secret is wrong: its private stream's login is refused.
    ccfg.private.push(s.private_stream(Exchange::Upbit, "bad"));
    let _collector = sluice_collector::start(ccfg, s.stop.clone()).await.unwrap();
    let _a = start_alerting(&s, &mock, "alerting-a", true).await;
    let names = |status: &str| -> Vec<String> {
        mock.delivered("webhook").iter().filter(|r| webhook_of(r).1 == status).map(|r| webhook_of(r).0).collect()
    };
    wait_for("PrivateStreamDown for upbit/bad", Duration::from_secs(30), || names("firing").contains(&"PrivateStreamDown".to_owned()))
        .await;
    assert!(!names("firing").contains(&"StaleData".to_owned()), "live feeds are not stale: {:?}", names("firing"));
    let down: Vec<Received> = mock.delivered("webhook").into_iter().filter(|r| webhook_of(r).0 == "PrivateStreamDown").collect();
    assert_eq!(down[0].body["alerts"][0]["labels"]["account"], "bad");

    // The market goes quiet: no book or ticker moves, so nothing is sent.
    s.sim.pause_markets(true);
    wait_for("StaleData", Duration::from_secs(30), || names("firing").contains(&"StaleData".to_owned())).await;
    s.sim.pause_markets(false);
    wait_for("StaleData resolved", Duration::from_secs(30), || names("resolved").contains(&"StaleData".to_owned())).await;
    assert!(!names("resolved").contains(&"PrivateStreamDown".to_owned()), "the refused login stays down");
    s.stop.cancel();
}

/// The mock LLM gateway: hangs (mode 0) or answers a triage (mode 1); keeps
/// every question and its bearer key.
#[derive(Clone, Default)]
struct Gateway {
    mode: std::sync::Arc<std::sync::atomic::AtomicU8>,
    asked: std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>,
}

async fn triage_chat(
    axum::extract::State(g): axum::extract::State<Gateway>,
    headers: axum::http::HeaderMap,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    g.asked.lock().unwrap().push((auth, body));
    if g.mode.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    let answer = r#"{"summary": "Upbit answers 500 to every call; check its status page before anything else."}"#;
    let events = format!(
        "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
        serde_json::json!({ "choices": [{ "delta": { "content": answer } }] }),
        serde_json::json!({ "choices": [], "usage": { "prompt_tokens": 900, "completion_tokens": 30 } })
    );
    ([("content-type", "text/event-stream")], events).into_response()
}

/// Waits (10 s at most) until the service's `/metrics` holds `line`.
async fn metric_shows(a: &sluice_alerting::Running, line: &str) {
    let url = format!("http://{}/metrics", a.ops_addr);
    let http = sluice_service::http_client::client();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let text = http.get(&url).send().await.unwrap().text().await.unwrap();
        if text.contains(line) {
            return;
        }
        assert!(Instant::now() < end, "{line} not in /metrics:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_llm_gateway_holds_no_notification_back_and_its_triage_rides_along_once_it_answers() {
    let s = stack(SimConfig::shipped()).await.unwrap();
    let mock = MockReceiver::start(s.stop.clone()).await.unwrap();
    let gw = Gateway::default();
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(triage_chat)).with_state(gw.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let text = format!(
        "{}\n[triage]\nenabled = true\nbase_url = \"{base}\"\napi_key_env = \"TRIAGE_KEY\"\ninterval = \"10s\"\ntimeout = \"3s\"\n",
        config_text().replace("http://placeholder/pagerduty", &mock.url("pagerduty"))
    );
    let env = [
        ("HOOK_URL", mock.url("webhook")),
        ("SLACK_URL", mock.url("slack")),
        ("DISCORD_URL", mock.url("discord")),
        ("PD_KEY", "rk".to_owned()),
        ("TRIAGE_KEY", "sk-triage-key".to_owned()),
    ];
    let a = sluice_alerting::start(s.alerting_config(Some(&text), &env).unwrap(), s.stop.clone()).await.unwrap();

    // The first triage asks (a few seconds after start) and the gateway hangs;
    // the exchange fails meanwhile. Its alerts go out without a triage.
    wait_for("the first triage question", Duration::from_secs(15), || !gw.asked.lock().unwrap().is_empty()).await;
    outage(&s);
    wait_for("ExchangeErrorRate notified", Duration::from_secs(20), || {
        mock.delivered("webhook").iter().any(|r| webhook_of(r) == ("ExchangeErrorRate".into(), "firing".into()))
    })
    .await;
    let first = mock.delivered("webhook");
    assert!(first.iter().all(|r| r.body["commonAnnotations"].get("triage").is_none()), "no triage yet: {first:?}");
    metric_shows(&a, "sluice_alerting_triage_total{result=\"first_token_timeout\"} 1").await;

    // The gateway answers the next question; the resolved notifications carry it.
    gw.mode.store(1, std::sync::atomic::Ordering::SeqCst);
    wait_for("a triage that succeeded", Duration::from_secs(20), || gw.asked.lock().unwrap().len() >= 2).await;
    metric_shows(&a, "sluice_alerting_triage_total{result=\"ok\"} 1").await;
    s.sim.clear_faults(Exchange::Upbit);
    wait_for("ExchangeErrorRate resolved", Duration::from_secs(30), || {
        mock.delivered("webhook").iter().any(|r| webhook_of(r) == ("ExchangeErrorRate".into(), "resolved".into()))
    })
    .await;
    let resolved =
        mock.delivered("webhook").into_iter().find(|r| webhook_of(r) == ("ExchangeErrorRate".into(), "resolved".into())).unwrap();
    assert_eq!(
        resolved.body["commonAnnotations"]["triage"],
        "Upbit answers 500 to every call; check its status page before anything else."
    );
    // Receivers are notified independently: Slack's resolved message may come a
    // moment after the webhook's.
    wait_for("Slack's resolved message with the triage", Duration::from_secs(10), || {
        mock.delivered("slack").iter().any(|r| r.body.to_string().contains("Triage: Upbit answers 500"))
    })
    .await;

    // What the model was asked: the key as bearer, the firing alert and the
    // figure that holds.
    let asked = gw.asked.lock().unwrap().clone();
    let (auth, body) = &asked[1];
    assert_eq!(auth, "Bearer sk-triage-key");
    let question = body["messages"][1]["content"].as_str().unwrap();
    assert!(question.contains("- ExchangeErrorRate critical firing {exchange=upbit}"), "{question}");
    assert!(question.lines().any(|l| l.starts_with("- ExchangeErrorRate {exchange=upbit}") && l.ends_with("HOLDS")), "{question}");
    s.stop.cancel();
}
