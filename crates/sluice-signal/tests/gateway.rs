//! The gateway client and the router against a mock OpenAI-compatible server on
//! port 0. The model name picks the mock's behaviour: a valid streamed answer,
//! broken JSON, prose, 401, 429 with Retry-After, 500, a slow first token, a
//! stalled stream, a refused `json_schema`. Each must get the right treatment,
//! and the money must add up exactly.

// Confidences parsed from the same decimal text are the same f64.
#![allow(clippy::float_cmp)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use secrecy::SecretString;
use serde_json::{Value, json};
use sluice_proto::signal::v1::Action;
use sluice_signal::cost::Price;
use sluice_signal::gateway::{ChatMessage, Gateway};
use sluice_signal::router::{CallRecord, ModelConfig, OverBudget, Policy, Router};
use tokio::time::Instant;

const KEY: &str = "sk-test-key";
const VALID: &str =
    r#"{"action":"BUY","confidence":0.8,"horizon":"1h","rationale":"Trend up.","key_levels":[{"kind":"support","price":"64000"}]}"#;

#[derive(Default)]
struct Mock {
    /// Per model: the times of its calls, and each call's body.
    calls: HashMap<String, Vec<(Instant, Value)>>,
}

type Shared = Arc<Mutex<Mock>>;

/// An SSE body: the text in a few deltas, then usage, then [DONE].
fn sse(text: &str, prompt: u64, completion: u64) -> String {
    let mut out = String::new();
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(20) {
        let s: String = piece.iter().collect();
        out.push_str(&format!("data: {}\n\n", json!({ "choices": [{ "index": 0, "delta": { "content": s } }] })));
    }
    out.push_str(&format!("data: {}\n\n", json!({ "choices": [], "usage": { "prompt_tokens": prompt, "completion_tokens": completion } })));
    out.push_str("data: [DONE]\n\n");
    out
}

fn stream(text: &str) -> Response {
    ([("content-type", "text/event-stream")], sse(text, 1_000, 200)).into_response()
}

async fn chat(State(mock): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {KEY}")) {
        return (StatusCode::UNAUTHORIZED, Json(json!({ "error": { "message": "bad key" } }))).into_response();
    }
    let model = body["model"].as_str().unwrap_or("").to_owned();
    let n = {
        let mut m = mock.lock().unwrap();
        let calls = m.calls.entry(model.clone()).or_default();
        calls.push((Instant::now(), body.clone()));
        calls.len()
    };
    let reasked = body["messages"].as_array().map_or(0, Vec::len) > 2;
    match model.as_str() {
        "valid" => stream(VALID),
        "broken" => stream(&format!("```json\n{}\n```", VALID.replace("]}", "],}"))),
        "prose" => stream("The market looks bullish to me; I would buy."),
        "prose-then-valid" if reasked => stream(VALID),
        "prose-then-valid" => stream("Bullish! Definitely bullish."),
        "unauthorized" => (StatusCode::UNAUTHORIZED, Json(json!({ "error": { "message": "key not allowed this model" } }))).into_response(),
        "limited" if n == 1 => {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], Json(json!({ "error": { "message": "slow down" } }))).into_response()
        }
        "limited" => stream(VALID),
        "flaky" if n <= 2 => (StatusCode::INTERNAL_SERVER_ERROR, "upstream model failed").into_response(),
        "flaky" => stream(VALID),
        "down" => (StatusCode::BAD_GATEWAY, "no upstream").into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            stream(VALID)
        }
        "stall" => {
            // The first token comes at once, the rest never within the total time.
            let first = format!("data: {}\n\n", json!({ "choices": [{ "delta": { "content": "{\"action\":" } }] }));
            let body = futures::stream::iter([Ok::<_, std::io::Error>(first)]).chain(futures::stream::pending());
            ([("content-type", "text/event-stream")], Body::from_stream(body)).into_response()
        }
        "noschema" if body["response_format"]["type"] == "json_schema" => {
            (StatusCode::BAD_REQUEST, Json(json!({ "error": { "message": "response_format json_schema is not supported" } })))
                .into_response()
        }
        "noschema" => stream(VALID),
        "plain" => {
            Json(json!({ "choices": [{ "message": { "content": VALID } }], "usage": { "prompt_tokens": 10, "completion_tokens": 5 } }))
                .into_response()
        }
        _ => (StatusCode::NOT_FOUND, Json(json!({ "error": { "message": format!("model {model} does not exist") } }))).into_response(),
    }
}

use futures::StreamExt;

async fn mock() -> (String, Shared) {
    let shared: Shared = Arc::default();
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat)).with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), shared)
}

fn model(name: &str, fallback: Option<&str>) -> ModelConfig {
    ModelConfig {
        name: name.into(),
        price: Price { input_per_m: "0.42".parse().unwrap(), output_per_m: "0.42".parse().unwrap() },
        json_schema: true,
        daily_budget_usd: None,
        first_token_ms: 400,
        total_ms: 800,
        max_tokens: 300,
        temperature: 0.2,
        fallback: fallback.map(str::to_owned),
    }
}

fn policy() -> Policy {
    Policy {
        attempts: 3,
        backoff_ms: 20,
        failures_to_cool: 2,
        cooldown_ms: 60_000,
        max_retry_after_ms: 5_000,
        over_budget: OverBudget::Cheap,
        cheap_model: "valid".into(),
    }
}

struct Setup {
    router: Router,
    mock: Shared,
    records: Arc<Mutex<Vec<CallRecord>>>,
}

async fn setup(models: Vec<ModelConfig>, key: &str) -> Setup {
    let (url, mock) = mock().await;
    let gw = Gateway::new(sluice_service::http_client::client(), &url, SecretString::from(key));
    let records: Arc<Mutex<Vec<CallRecord>>> = Arc::default();
    let r2 = records.clone();
    let router = Router::new(gw, models, policy(), Box::new(move |c| r2.lock().unwrap().push(c.clone())));
    Setup { router, mock, records }
}

fn question() -> Vec<ChatMessage> {
    vec![
        ChatMessage { role: "system", content: "You are a trading analyst.".into() },
        ChatMessage { role: "user", content: "BTC/USDT features: ...".into() },
    ]
}

fn calls(s: &Setup, model: &str) -> usize {
    s.mock.lock().unwrap().calls.get(model).map_or(0, Vec::len)
}

#[tokio::test]
async fn a_valid_answer_is_parsed_and_costed_exactly() {
    let s = setup(vec![model("valid", None)], KEY).await;
    let a = s.router.ask("valid", question()).await;
    assert_eq!((a.verdict.action, a.verdict.confidence, a.model.as_str(), a.calls), (Action::Buy, 0.8, "valid", 1));
    assert_eq!(a.fallback_reason, "");
    // 1,000 prompt and 200 completion tokens at 0.42 per million: 0.000504 USD.
    assert_eq!((a.prompt_tokens, a.completion_tokens, a.usd), (1_000, 200, "0.000504".parse::<Decimal>().unwrap()));
    assert_eq!(s.router.spent_today("valid"), "0.000504".parse::<Decimal>().unwrap());
    let body = s.mock.lock().unwrap().calls["valid"][0].1.clone();
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(body["response_format"]["json_schema"]["strict"], true);
    assert_eq!(body["stream"], true);
}

#[tokio::test]
async fn broken_json_is_repaired_and_prose_is_asked_again_once_then_held() {
    let s = setup(vec![model("broken", None), model("prose", None), model("prose-then-valid", None)], KEY).await;
    let a = s.router.ask("broken", question()).await;
    assert_eq!((a.verdict.action, a.verdict.repaired), (Action::Buy, true));
    assert!(a.fallback_reason.contains("broken: answer repaired"), "{}", a.fallback_reason);

    let a = s.router.ask("prose-then-valid", question()).await;
    assert_eq!((a.verdict.action, a.calls), (Action::Buy, 2));
    let reask = s.mock.lock().unwrap().calls["prose-then-valid"][1].1.clone();
    let last = reask["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().to_owned();
    assert!(last.contains("That answer is invalid: the answer is not a JSON object"), "{last}");

    let a = s.router.ask("prose", question()).await;
    assert_eq!((a.verdict.action, a.verdict.confidence, a.calls), (Action::Hold, 0.0, 2), "one re-ask, then HOLD");
    assert!(a.verdict.rationale.contains("prose: invalid again"), "{}", a.verdict.rationale);
    assert_eq!(a.model, "");
    // Both calls were paid for: 2 x 1,200 tokens.
    assert_eq!(a.usd, "0.001008".parse::<Decimal>().unwrap());
}

#[tokio::test]
async fn a_refused_key_is_never_retried_and_the_fallback_answers() {
    let s = setup(vec![model("unauthorized", Some("valid")), model("valid", None)], KEY).await;
    let a = s.router.ask("unauthorized", question()).await;
    assert_eq!((a.verdict.action, a.model.as_str()), (Action::Buy, "valid"));
    assert_eq!(calls(&s, "unauthorized"), 1, "401 is not retried");
    assert!(a.fallback_reason.contains("gateway refused the key (HTTP 401): key not allowed this model"), "{}", a.fallback_reason);
    // And the model cools down at once: the next question goes straight to the fallback.
    let a = s.router.ask("unauthorized", question()).await;
    assert_eq!(calls(&s, "unauthorized"), 1);
    assert!(a.fallback_reason.contains("unauthorized: cooling down"), "{}", a.fallback_reason);

    // A wrong key for the whole gateway: every model refuses; HOLD, nothing retried.
    let s = setup(vec![model("valid", None)], "sk-wrong").await;
    let a = s.router.ask("valid", question()).await;
    assert_eq!((a.verdict.action, a.calls), (Action::Hold, 1));
    assert_eq!(s.records.lock().unwrap()[0].outcome, "auth");
}

#[tokio::test]
async fn a_429_waits_for_its_retry_after_and_a_500_is_retried() {
    let s = setup(vec![model("limited", None), model("flaky", None)], KEY).await;
    let a = s.router.ask("limited", question()).await;
    assert_eq!((a.verdict.action, a.calls), (Action::Buy, 2));
    let times: Vec<Instant> = s.mock.lock().unwrap().calls["limited"].iter().map(|c| c.0).collect();
    assert!(times[1] - times[0] >= Duration::from_millis(950), "Retry-After: 1 honoured: {:?}", times[1] - times[0]);

    let a = s.router.ask("flaky", question()).await;
    assert_eq!((a.verdict.action, a.calls, calls(&s, "flaky")), (Action::Buy, 3, 3));
    let outcomes: Vec<&str> = s.records.lock().unwrap().iter().filter(|r| r.model == "flaky").map(|r| r.outcome).collect();
    assert_eq!(outcomes, ["server", "server", "ok"]);
}

#[tokio::test]
async fn slow_first_token_and_stalled_streams_time_out_and_fall_back() {
    let s = setup(vec![model("slow", Some("stall")), model("stall", Some("valid")), model("valid", None)], KEY).await;
    let a = s.router.ask("slow", question()).await;
    assert_eq!((a.verdict.action, a.model.as_str()), (Action::Buy, "valid"));
    assert_eq!((calls(&s, "slow"), calls(&s, "stall")), (3, 3), "each retried up to its attempts");
    let outcomes: Vec<&str> = s.records.lock().unwrap().iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes[..6], ["first_token_timeout"; 3].iter().chain(["timeout"; 3].iter()).copied().collect::<Vec<_>>()[..]);
    assert!(a.fallback_reason.contains("slow: no first token within 400ms"), "{}", a.fallback_reason);
    assert!(a.fallback_reason.contains("stall: no complete answer within 800ms"), "{}", a.fallback_reason);
}

#[tokio::test]
async fn failing_models_cool_down_and_a_refused_schema_falls_back_to_json_object() {
    let s = setup(vec![model("down", Some("valid")), model("valid", None), model("noschema", None), model("plain", None)], KEY).await;
    for _ in 0..2 {
        assert_eq!(s.router.ask("down", question()).await.model, "valid");
    }
    assert_eq!(calls(&s, "down"), 6, "two questions, three attempts each");
    let a = s.router.ask("down", question()).await;
    assert_eq!(calls(&s, "down"), 6, "cooling down: not called");
    assert!(a.fallback_reason.contains("down: cooling down"), "{}", a.fallback_reason);

    let a = s.router.ask("noschema", question()).await;
    assert_eq!((a.verdict.action, a.calls), (Action::Buy, 2));
    let second = s.mock.lock().unwrap().calls["noschema"][1].1.clone();
    assert_eq!(second["response_format"]["type"], "json_object");

    // A gateway that ignores `stream` and answers one JSON body.
    let a = s.router.ask("plain", question()).await;
    assert_eq!((a.verdict.action, a.prompt_tokens, a.completion_tokens), (Action::Buy, 10, 5));
}

#[tokio::test]
async fn a_spent_budget_routes_to_the_cheap_model_or_stops() {
    let mut strong = model("strong-but-missing", None);
    strong.daily_budget_usd = Some(Decimal::ZERO);
    let s = setup(vec![strong.clone(), model("valid", None)], KEY).await;
    let a = s.router.ask("strong-but-missing", question()).await;
    assert_eq!((a.model.as_str(), calls(&s, "strong-but-missing")), ("valid", 0));
    assert!(a.fallback_reason.contains("strong-but-missing: daily budget spent"), "{}", a.fallback_reason);

    let mut cheap = model("valid", None);
    cheap.daily_budget_usd = Some("0.0006".parse().unwrap());
    let s = setup(vec![cheap], KEY).await;
    assert_eq!(s.router.ask("valid", question()).await.verdict.action, Action::Buy);
    assert_eq!(s.router.ask("valid", question()).await.verdict.action, Action::Buy, "0.000504 spent, under 0.0006");
    let a = s.router.ask("valid", question()).await;
    assert_eq!((a.verdict.action, a.calls), (Action::Hold, 0), "0.001008 spent: the cheap model is over too");
    assert_eq!(calls(&s, "valid"), 2);
}

#[tokio::test]
async fn the_gateways_own_request_limit_is_kept() {
    let (url, mock) = mock().await;
    let gw = Gateway::new(sluice_service::http_client::client(), &url, SecretString::from(KEY));
    // 120 a minute: a minute's worth at once, then one every 0.5 s.
    let router = Router::new(gw, vec![model("valid", None)], policy(), Box::new(|_| {}))
        .with_limits(sluice_signal::router::Limits::new(120, 10_000_000));
    let started = Instant::now();
    for _ in 0..122 {
        assert_eq!(router.ask("valid", question()).await.verdict.action, Action::Buy);
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "the 121st and 122nd waited for the limit: {took:?}");
    assert_eq!(mock.lock().unwrap().calls["valid"].len(), 122);
}
