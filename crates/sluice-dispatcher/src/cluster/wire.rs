//! Conversions between the dispatcher's types and `sluice.cluster.v1`, the
//! messages replicas exchange over NATS. Everything that arrives is validated:
//! a malformed message is an error naming the field, never a panic.

use std::time::Duration;

use sluice_domain::Exchange;
use sluice_exchange::feedback::Observation;
use sluice_exchange::policy::Scope;
use sluice_proto::cluster::v1 as pb;
use sluice_rate::Time;
use sluice_rate::scheduler::Class;

use crate::request::BucketKey;
use crate::shard::Outcome;

/// A cluster message that cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("cannot decode {what}: {source}")]
    Decode { what: &'static str, source: prost::DecodeError },
    #[error("{0}")]
    Field(String),
}

fn field(msg: String) -> WireError {
    WireError::Field(msg)
}

pub(crate) fn decode<M: prost::Message + Default>(what: &'static str, bytes: &[u8]) -> Result<M, WireError> {
    M::decode(bytes).map_err(|source| WireError::Decode { what, source })
}

pub(crate) fn ns(t: Time) -> u64 {
    t.as_nanos()
}

pub(crate) fn time(ns: u64) -> Time {
    Time::from_nanos(ns)
}

/// What a heartbeat says of its replica.
pub(crate) fn said(hb: &pb::Heartbeat) -> super::members::Said {
    super::members::Said {
        incarnation: hb.incarnation.clone(),
        fallback_clear: time(hb.fallback_clear_unix_ns),
        egress: hb.egress.clone(),
        addr: hb.addr.clone(),
        solo_from: time(hb.solo_from_unix_ns),
        solo_until: time(hb.solo_until_unix_ns),
        upstream_timeout: Duration::from_millis(hb.upstream_timeout_ms),
        share_of: hb.share_of,
    }
}

fn scope_str(s: Option<Scope>) -> String {
    s.map(|s| s.as_str().to_owned()).unwrap_or_default()
}

pub(crate) fn parse_scope(s: &str) -> Result<Option<Scope>, WireError> {
    match s {
        "" => Ok(None),
        "ip" => Ok(Some(Scope::Ip)),
        "account" => Ok(Some(Scope::Account)),
        "connection" => Ok(Some(Scope::Connection)),
        other => Err(field(format!("scope '{other}' is not ip, account or connection"))),
    }
}

pub(crate) fn bucket_ref(k: &BucketKey) -> pb::BucketRef {
    pb::BucketRef {
        exchange: k.exchange.to_string(),
        scope: k.scope.as_str().to_owned(),
        scope_key: k.scope_key.clone(),
        group: k.group.clone(),
        partition: k.partition.clone(),
    }
}

pub(crate) fn bucket_key(r: &pb::BucketRef, exchange: Exchange) -> Result<BucketKey, WireError> {
    let ex: Exchange = r.exchange.parse().map_err(|e: sluice_domain::UnknownExchange| field(e.to_string()))?;
    if ex != exchange {
        return Err(field(format!("bucket of {ex} in a message about {exchange}")));
    }
    let scope = parse_scope(&r.scope)?.ok_or_else(|| field("bucket without a scope".into()))?;
    if r.group.is_empty() || r.scope_key.is_empty() {
        return Err(field("bucket without a group or scope key".into()));
    }
    Ok(BucketKey { exchange: ex, scope, scope_key: r.scope_key.clone(), group: r.group.clone(), partition: r.partition.clone() })
}

pub(crate) fn charges(needs: &[(BucketKey, u64)]) -> Vec<pb::Charge> {
    needs.iter().map(|(k, c)| pb::Charge { bucket: Some(bucket_ref(k)), cost: *c }).collect()
}

pub(crate) fn needs(charges: &[pb::Charge], exchange: Exchange) -> Result<Vec<(BucketKey, u64)>, WireError> {
    if charges.is_empty() {
        return Err(field("no charges".into()));
    }
    charges
        .iter()
        .map(|c| {
            let r = c.bucket.as_ref().ok_or_else(|| field("charge without a bucket".into()))?;
            Ok((bucket_key(r, exchange)?, c.cost))
        })
        .collect()
}

pub(crate) fn class_number(c: Class) -> u32 {
    c.index() as u32 + 1
}

pub(crate) fn class(n: u32) -> Result<Class, WireError> {
    match n {
        1 => Ok(Class::Order),
        2 => Ok(Class::Account),
        3 => Ok(Class::MarketData),
        4 => Ok(Class::Backfill),
        _ => Err(field(format!("class {n} is not 1 to 4"))),
    }
}

fn dur(d: Duration) -> u64 {
    d.as_nanos() as u64
}

pub(crate) fn observation(o: &Observation) -> pb::Observation {
    use pb::observation::Kind;
    match o {
        Observation::Usage { scope, period, used, remaining, limit, group } => pb::Observation {
            scope: scope_str(*scope),
            kind: Some(Kind::Usage(pb::Usage {
                period_ns: dur(*period),
                used: *used,
                remaining: *remaining,
                limit: *limit,
                group: group.clone(),
            })),
        },
        Observation::Throttled { scope, retry_after } => pb::Observation {
            scope: scope_str(*scope),
            kind: Some(Kind::Throttled(pb::Throttled { retry_after_ns: retry_after.map(dur) })),
        },
        Observation::Banned { scope, duration } => {
            pb::Observation { scope: scope_str(*scope), kind: Some(Kind::Banned(pb::Banned { duration_ns: duration.map(dur) })) }
        }
    }
}

pub(crate) fn parse_observation(o: &pb::Observation) -> Result<Observation, WireError> {
    use pb::observation::Kind;
    let scope = parse_scope(&o.scope)?;
    match o.kind.as_ref().ok_or_else(|| field("observation without a kind".into()))? {
        Kind::Usage(u) => {
            if u.period_ns == 0 {
                return Err(field("usage observation without a period".into()));
            }
            Ok(Observation::Usage {
                scope,
                period: Duration::from_nanos(u.period_ns),
                used: u.used,
                remaining: u.remaining,
                limit: u.limit,
                group: u.group.clone(),
            })
        }
        Kind::Throttled(t) => Ok(Observation::Throttled { scope, retry_after: t.retry_after_ns.map(Duration::from_nanos) }),
        Kind::Banned(b) => Ok(Observation::Banned { scope, duration: b.duration_ns.map(Duration::from_nanos) }),
    }
}

pub(crate) fn settled(outcome: &Outcome, admitted_at: Time, route: &str) -> pb::Settled {
    use pb::settled::Outcome as O;
    let (o, at, observations) = match outcome {
        Outcome::Answered { at, observations } => (O::Answered, *at, observations.iter().map(observation).collect()),
        Outcome::NotSent => (O::NotSent, Time::ZERO, Vec::new()),
        Outcome::Unknown { at } => (O::Unknown, *at, Vec::new()),
    };
    pb::Settled { outcome: o as i32, at_unix_ns: ns(at), admitted_unix_ns: ns(admitted_at), route: route.to_owned(), observations }
}

pub(crate) fn outcome(s: &pb::Settled) -> Result<Outcome, WireError> {
    use pb::settled::Outcome as O;
    match O::try_from(s.outcome) {
        Ok(O::Answered) => Ok(Outcome::Answered {
            at: time(s.at_unix_ns),
            observations: s.observations.iter().map(parse_observation).collect::<Result<_, _>>()?,
        }),
        Ok(O::NotSent) => Ok(Outcome::NotSent),
        Ok(O::Unknown) => Ok(Outcome::Unknown { at: time(s.at_unix_ns) }),
        _ => Err(field(format!("settled outcome {} is not known", s.outcome))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn key() -> BucketKey {
        BucketKey {
            exchange: Exchange::Okx,
            scope: Scope::Account,
            scope_key: "demo".into(),
            group: "order".into(),
            partition: Some("BTC-USDT".into()),
        }
    }

    #[test]
    fn buckets_and_observations_survive_the_wire() {
        let needs = vec![(key(), 3)];
        let back = super::needs(&charges(&needs), Exchange::Okx).unwrap();
        assert_eq!(back, needs);
        let obs = vec![
            Observation::Usage {
                scope: Some(Scope::Ip),
                period: Duration::from_secs(60),
                used: Some(7),
                remaining: None,
                limit: Some(6000),
                group: None,
            },
            Observation::Throttled { scope: None, retry_after: Some(Duration::from_millis(1500)) },
            Observation::Banned { scope: Some(Scope::Account), duration: None },
        ];
        let s = settled(&Outcome::Answered { at: Time::from_millis(5), observations: obs.clone() }, Time::from_millis(1), "POST /x");
        let s = pb::Settled::decode(s.encode_to_vec().as_slice()).unwrap();
        match outcome(&s).unwrap() {
            Outcome::Answered { at, observations } => {
                assert_eq!(at, Time::from_millis(5));
                assert_eq!(observations, obs);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_messages_are_named_errors() {
        let mut c = charges(&[(key(), 1)]);
        assert!(needs(&c, Exchange::Bybit).unwrap_err().to_string().contains("bucket of okx"));
        c[0].bucket.as_mut().unwrap().scope = "pod".into();
        assert!(needs(&c, Exchange::Okx).unwrap_err().to_string().contains("scope 'pod'"));
        assert!(needs(&[], Exchange::Okx).is_err());
        assert!(class(9).is_err());
        assert!(decode::<pb::GrantRequest>("grant request", b"\xff\xff\xff").unwrap_err().to_string().contains("grant request"));
        let s = pb::Settled { outcome: 42, ..Default::default() };
        assert!(outcome(&s).is_err());
    }
}
