//! Every service's heartbeat: `sluice.ops.v1.Heartbeat` on
//! `heartbeat.<service>.<instance>` every interval, carrying the service's own
//! Prometheus metrics by their real names. So an alerting service (or anyone on
//! NATS) tells a live service from a dead one by the heartbeats' silence, and
//! reads exactly the figures `/metrics` serves, with no second naming scheme and
//! no assumed values.
//!
//! The samples come from encoding the registry as OpenMetrics text and reading
//! it back ([`parse_metrics`]): the registry has no other read-out, and the text
//! is what Prometheus scrapes, so both see the same numbers. Histogram buckets
//! are left out (their `_sum` and `_count` stay), which keeps a heartbeat small.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::registry::Registry;
use prost::Message;
use sluice_proto::ops::v1 as pb;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The subject a service's heartbeats go to.
pub fn subject(service: &str, instance: &str) -> String {
    format!("heartbeat.{service}.{}", crate::heartbeat::token(instance))
}

/// A NATS subject token from a name: dots, spaces and wildcards would split or
/// widen the subject, so they become `_`.
pub fn token(name: &str) -> String {
    name.chars().map(|c| if c == '.' || c == '*' || c == '>' || c.is_whitespace() { '_' } else { c }).collect()
}

/// Reads OpenMetrics / Prometheus text into samples: `name{label="v",...} value`
/// lines; comments, histogram buckets and `_created` series are skipped, and
/// a line that cannot be read is skipped rather than failing the rest.
pub fn parse_metrics(text: &str) -> Vec<pb::Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<pb::Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => (&line[..i], &line[i..]),
        None => return None,
    };
    if name.ends_with("_bucket") || name.ends_with("_created") {
        return None;
    }
    let mut labels = HashMap::new();
    let rest = if let Some(body) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(body)?;
        labels = parsed;
        after
    } else {
        rest
    };
    // After the value an optional timestamp or exemplar may follow.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(pb::Sample { name: name.to_owned(), labels, value })
}

/// `a="x",b="y\"z"} rest` into the labels and what follows the `}`.
fn parse_labels(body: &str) -> Option<(HashMap<String, String>, &str)> {
    let mut labels = HashMap::new();
    let mut s = body;
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_owned();
        s = s[eq + 1..].strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.insert(key, value);
        s = &s[end + 1..];
    }
}

/// What a heartbeat says of its service.
#[derive(Clone, Debug)]
pub struct Identity {
    pub service: String,
    pub instance: String,
    pub interval: Duration,
}

/// Builds the heartbeat of `id` from `registry` now.
pub fn build(id: &Identity, registry: &Mutex<Registry>, leaving: bool) -> pb::Heartbeat {
    let mut text = String::new();
    {
        let r = registry.lock().unwrap_or_else(|p| p.into_inner());
        // Encoding into a String cannot fail for lack of room; a failure would be
        // a metric's own formatting error, and then the samples so far still go.
        let _ = prometheus_client::encoding::text::encode(&mut text, &r);
    }
    let sent_at = SystemTime::now();
    pb::Heartbeat {
        service: id.service.clone(),
        instance: id.instance.clone(),
        sent_at: Some(sent_at.into()),
        interval: prost_types::Duration::try_from(id.interval).ok(),
        leaving,
        samples: parse_metrics(&text),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

/// Publishes the heartbeat of `id` every interval until `shutdown`, then one
/// last one with `leaving` set. Core NATS (no JetStream): a heartbeat is
/// worth something only now, and a lost one is what its receivers watch for.
pub fn spawn(nats: async_nats::Client, id: Identity, registry: Arc<Mutex<Registry>>, shutdown: CancellationToken) -> JoinHandle<()> {
    let subject = subject(&id.service, &id.instance);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(id.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => break,
            }
            let hb = build(&id, &registry, false);
            if let Err(e) = nats.publish(subject.clone(), hb.encode_to_vec().into()).await {
                tracing::debug!(error = %e, "heartbeat not published");
            }
        }
        let hb = build(&id, &registry, true);
        let _ = nats.publish(subject.clone(), hb.encode_to_vec().into()).await;
        let _ = nats.flush().await;
    })
}

/// For a service with no NATS client of its own (a single dispatcher):
/// connects to `url` in the background (a NATS that is not up yet delays only
/// the heartbeats) and publishes until `shutdown`.
pub async fn connect_and_spawn(
    url: &str,
    auth: &crate::credentials::NatsAuth,
    id: Identity,
    registry: Arc<Mutex<Registry>>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, String> {
    let nats = auth
        .options()
        .await
        .map_err(|e| e.to_string())?
        .name(format!("sluice-{} {} heartbeat", id.service, id.instance))
        .retry_on_initial_connect()
        .connect(url)
        .await
        .map_err(|e| format!("heartbeat NATS at {url}: {e}"))?;
    Ok(spawn(nats, id, registry, shutdown))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::histogram::Histogram;

    #[test]
    fn reads_back_what_the_registry_encodes() {
        let mut r = Registry::with_prefix("sluice_demo");
        let f = Family::<Vec<(String, String)>, Counter>::default();
        r.register("responses", "answers", f.clone());
        f.get_or_create(&vec![("exchange".into(), "upbit".into()), ("status".into(), "5xx".into())]).inc_by(3);
        let h = Histogram::new([0.1, 1.0]);
        r.register("wait_seconds", "wait", h.clone());
        h.observe(0.5);
        let id = Identity { service: "demo".into(), instance: "a.b".into(), interval: Duration::from_secs(1) };
        let hb = build(&id, &Mutex::new(r), false);
        let s = hb.samples.iter().find(|s| s.name == "sluice_demo_responses_total").expect("counter");
        assert!((s.value - 3.0).abs() < 1e-9);
        assert_eq!(s.labels["exchange"], "upbit");
        assert_eq!(s.labels["status"], "5xx");
        assert!(hb.samples.iter().any(|s| s.name == "sluice_demo_wait_seconds_count" && (s.value - 1.0).abs() < 1e-9));
        assert!(!hb.samples.iter().any(|s| s.name.ends_with("_bucket")));
        assert_eq!(subject(&id.service, &id.instance), "heartbeat.demo.a_b");
    }

    #[test]
    fn escaped_labels_and_bad_lines() {
        let text = "# HELP x y\nx{a=\"q\\\"uo\\\\te\",b=\"\"} 1.5 1700000000\nbroken{a=\"x} 1\ny +Inf\nz notanumber\n";
        let got = parse_metrics(text);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].labels["a"], "q\"uo\\te");
        assert_eq!(got[0].labels["b"], "");
        assert!((got[0].value - 1.5).abs() < 1e-9);
        assert!(got[1].value.is_infinite());
    }
}
