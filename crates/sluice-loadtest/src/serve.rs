//! A target with a known latency, to calibrate a load tester against (ours or
//! another) and to measure one tool beside another on equal terms: every HTTP
//! request is answered `200 ok` after a delay drawn from a fixed distribution,
//! and `/ws` is a WebSocket that answers each message and then sends one every
//! interval.
//!
//! The distribution is exact, not random: delays are dealt from a 1,000-slot
//! cycle by smooth weighted round robin, so any 1,000 consecutive requests see
//! exactly the given shares, interleaved (no run of slow ones at the end).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::IntoResponse;
use axum::routing::any;

use sluice_service::duration::{BadDuration, parse as parse_duration};

/// Delays and their shares, as `2ms:98,40ms:1.5,300ms:0.5` (or one `5ms`).
#[derive(Debug, Clone, PartialEq)]
pub struct Delays(pub Vec<(Duration, f64)>);

/// A delay distribution that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BadDelays {
    #[error(transparent)]
    Duration(#[from] BadDuration),
    #[error("'{0}': a share is a positive number, as in 2ms:98,40ms:2")]
    Share(String),
}

impl std::str::FromStr for Delays {
    type Err = BadDelays;

    fn from_str(s: &str) -> Result<Delays, BadDelays> {
        let mut v = Vec::new();
        for part in s.split(',') {
            let (d, w) = part.split_once(':').unwrap_or((part, "1"));
            let w: f64 = w.trim().parse().map_err(|_| BadDelays::Share(part.to_owned()))?;
            if !(w.is_finite() && w > 0.0) {
                return Err(BadDelays::Share(part.to_owned()));
            }
            v.push((parse_duration(d)?, w));
        }
        Ok(Delays(v))
    }
}

impl std::fmt::Display for Delays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total: f64 = self.0.iter().map(|(_, w)| w).sum();
        let parts: Vec<String> = self.0.iter().map(|(d, w)| format!("{d:?} for {}%", (w / total * 1e4).round() / 1e2)).collect();
        f.write_str(&parts.join(", "))
    }
}

/// Slots in one cycle of the schedule.
const CYCLE: usize = 1000;

impl Delays {
    /// One cycle: each delay's share of the slots, interleaved.
    pub fn schedule(&self) -> Vec<Duration> {
        let total: f64 = self.0.iter().map(|(_, w)| w).sum();
        let weights: Vec<f64> = self.0.iter().map(|(_, w)| w / total).collect();
        let mut current = vec![0.0; weights.len()];
        (0..CYCLE)
            .map(|_| {
                for (c, w) in current.iter_mut().zip(&weights) {
                    *c += w;
                }
                let best = (0..current.len()).max_by(|a, b| current[*a].total_cmp(&current[*b])).unwrap_or(0);
                current[best] -= 1.0;
                self.0[best].0
            })
            .collect()
    }
}

struct Shared {
    schedule: Vec<Duration>,
    next: AtomicU64,
    ws_every: Duration,
}

impl Shared {
    fn delay(&self) -> Duration {
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize;
        self.schedule[i % self.schedule.len()]
    }
}

/// A running target.
pub struct Served {
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

/// Serves on `addr` until `stop` resolves.
pub async fn serve(
    addr: SocketAddr,
    delays: &Delays,
    ws_every: Duration,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<Served> {
    let shared = Arc::new(Shared { schedule: delays.schedule(), next: AtomicU64::new(0), ws_every });
    let app = Router::new().route("/ws", any(ws)).fallback(answer).with_state(shared);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        // The server ends with `stop`; an accept error ends it early and is the
        // client's to see (refused connections).
        let _ = axum::serve(listener, app).with_graceful_shutdown(stop).await;
    });
    Ok(Served { addr, task })
}

async fn answer(State(s): State<Arc<Shared>>) -> &'static str {
    let d = s.delay();
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
    "ok\n"
}

async fn ws(State(s): State<Arc<Shared>>, up: WebSocketUpgrade) -> impl IntoResponse {
    up.on_upgrade(move |socket| session(socket, s))
}

/// Echoes the first message after the schedule's delay, then sends a numbered
/// message every interval until the client leaves.
async fn session(mut socket: WebSocket, s: Arc<Shared>) {
    let Some(Ok(_)) = socket.recv().await else { return };
    let d = s.delay();
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
    if socket.send(Message::text("{\"subscribed\":true}")).await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(s.ws_every.max(Duration::from_millis(1)));
    tick.tick().await;
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                n += 1;
                if socket.send(Message::text(format!("{{\"seq\":{n}}}"))).await.is_err() {
                    return;
                }
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_deals_exact_shares_interleaved() {
        let d: Delays = "2ms:98,40ms:1.5,300ms:0.5".parse().unwrap();
        let s = d.schedule();
        let count = |ms: u64| s.iter().filter(|x| **x == Duration::from_millis(ms)).count();
        assert_eq!((count(2), count(40), count(300)), (980, 15, 5));
        // Interleaved: the first 200 already hold their share of 40 ms delays.
        let early = s[..200].iter().filter(|x| **x == Duration::from_millis(40)).count();
        assert_eq!(early, 3);
    }

    #[test]
    fn shows_shares_as_percentages() {
        let d: Delays = "2ms:98,40ms:1.5,300ms:0.5".parse().unwrap();
        assert_eq!(d.to_string(), "2ms for 98%, 40ms for 1.5%, 300ms for 0.5%");
        assert_eq!("5ms".parse::<Delays>().unwrap().to_string(), "5ms for 100%");
    }

    #[test]
    fn reads_distributions() {
        assert_eq!("5ms".parse::<Delays>().unwrap(), Delays(vec![(Duration::from_millis(5), 1.0)]));
        assert!("5ms:0".parse::<Delays>().is_err());
        assert!("5:1".parse::<Delays>().is_err());
        assert!("5ms:x".parse::<Delays>().is_err());
    }
}
