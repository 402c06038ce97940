//! A WebSocket session per client: connect, send the subscribe message, wait for
//! the first message (the session's latency: what a collector waits before its
//! first data), then count what arrives for the receive period.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{self, Message};

use super::{BadTarget, Done};
use crate::stats::{Answer, ErrorKind, Outcome, Tally};

type Stream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket endpoint, what to send on it, and how long to listen.
pub struct WsTarget {
    url: String,
    subscribe: Option<String>,
    receive_for: Duration,
}

impl WsTarget {
    pub fn new(url: &str, subscribe: Option<String>, receive_for: Duration) -> Result<WsTarget, BadTarget> {
        let bad = |why: &str| BadTarget::Url(url.to_owned(), why.to_owned());
        let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        match uri.scheme_str() {
            Some("ws" | "wss") => {}
            _ => return Err(bad("the scheme must be ws or wss")),
        }
        super::host_port(&uri).ok_or_else(|| bad("it has no host"))?;
        if matches!(uri.scheme_str(), Some("wss")) {
            sluice_service::http_client::install_crypto_provider();
        }
        Ok(WsTarget { url: url.to_owned(), subscribe, receive_for })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn describe(&self) -> String {
        let sub = if self.subscribe.is_some() { ", subscribe" } else { "" };
        format!("WebSocket {}{sub}, first message then {:?} of receiving", self.url, self.receive_for)
    }

    /// One session; its answer is in at the first message.
    pub(super) async fn session(&self, timeout: Duration, tally: &mut Tally) -> Done {
        let (mut ws, end) = match tokio::time::timeout(timeout, self.open()).await {
            Err(_) => return Done::now(Outcome::Error(ErrorKind::Timeout)),
            Ok(Err(outcome)) => return Done::now(outcome),
            Ok(Ok(opened)) => opened,
        };
        let until = tokio::time::Instant::now() + self.receive_for;
        while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(until, ws.next()).await {
            let len = match msg {
                Message::Text(t) => t.len(),
                Message::Binary(b) => b.len(),
                Message::Close(_) => break,
                _ => continue,
            };
            tally.messages += 1;
            tally.bytes += len as u64;
        }
        // A polite close, but never wait long for the server's answer to it.
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
        Done { outcome: Outcome::Answer(Answer::Http(101)), end }
    }

    async fn open(&self) -> Result<(Stream, Instant), Outcome> {
        let (mut ws, _) = tokio_tungstenite::connect_async(self.url.as_str()).await.map_err(classify)?;
        if let Some(text) = &self.subscribe {
            ws.send(Message::text(text.as_str())).await.map_err(classify)?;
        }
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(_) | Message::Binary(_))) => return Ok((ws, Instant::now())),
                Some(Ok(Message::Close(_))) | None => return Err(Outcome::Error(ErrorKind::Closed)),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(classify(e)),
            }
        }
    }
}

/// A refused upgrade is an answer (its HTTP status); the rest are errors.
fn classify(e: tungstenite::Error) -> Outcome {
    use tungstenite::Error as E;
    Outcome::Error(match e {
        E::Http(resp) => return Outcome::Answer(Answer::Http(resp.status().as_u16())),
        E::Io(io) => ErrorKind::of_io(&io),
        E::Tls(_) => ErrorKind::Tls,
        E::ConnectionClosed | E::AlreadyClosed => ErrorKind::Closed,
        E::Protocol(_) | E::Url(_) | E::HttpFormat(_) | E::Capacity(_) | E::Utf8(_) => ErrorKind::Protocol,
        _ => ErrorKind::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_only_websocket_urls() {
        assert!(WsTarget::new("http://127.0.0.1/ws", None, Duration::ZERO).is_err());
        assert!(WsTarget::new("ws:///nohost", None, Duration::ZERO).is_err());
        assert!(WsTarget::new("ws://127.0.0.1:9/ws", Some("{}".into()), Duration::ZERO).is_ok());
    }
}
