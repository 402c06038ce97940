//! Heartbeats into samples, pure: every sample of a service's heartbeat with
//! its `service` and `instance` added (as Prometheus adds `job` and
//! `instance` to what it scrapes), `exchange` derived from `venue`
//! ("bybit-linear" is exchange "bybit", so an exchange's outage can inhibit
//! its feeds' alerts), and `up{service,instance}` for the heartbeat itself.

use sluice_proto::ops::v1::Heartbeat;

use crate::matcher::Labels;

/// The series the alerting service itself reads from a heartbeat.
pub type Point = (String, Labels, f64);

/// A heartbeat's samples. Another alerting replica's figures are its own
/// probes' (each replica probes for itself), so only its `up` is taken.
pub fn samples(hb: &Heartbeat) -> Vec<Point> {
    let id: Labels = [("service".to_owned(), hb.service.clone()), ("instance".to_owned(), hb.instance.clone())].into();
    let mut out = vec![("up".to_owned(), id.clone(), 1.0)];
    if hb.service == "alerting" {
        return out;
    }
    for s in &hb.samples {
        let mut labels: Labels = s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if let (Some(venue), false) = (labels.get("venue").cloned(), labels.contains_key("exchange")) {
            let ex = venue.split('-').next().unwrap_or(&venue).to_owned();
            labels.insert("exchange".into(), ex);
        }
        labels.extend(id.iter().map(|(k, v)| (k.clone(), v.clone())));
        out.push((s.name.clone(), labels, s.value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::ops::v1::Sample;

    #[test]
    fn identity_and_exchange_are_added() {
        let hb = Heartbeat {
            service: "collector".into(),
            instance: "c-0".into(),
            samples: vec![Sample {
                name: "sluice_collector_stream_age_ms".into(),
                labels: [("venue".to_owned(), "bybit-linear".to_owned())].into(),
                value: 12.0,
            }],
            ..Default::default()
        };
        let got = samples(&hb);
        assert_eq!(got[0].0, "up");
        assert_eq!(got[1].1["exchange"], "bybit");
        assert_eq!(got[1].1["instance"], "c-0");
        let other = Heartbeat { service: "alerting".into(), instance: "a-1".into(), samples: hb.samples.clone(), ..Default::default() };
        assert_eq!(samples(&other).len(), 1);
    }
}
