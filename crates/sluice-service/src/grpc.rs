//! gRPC plumbing shared by sluice's servers.
//!
//! [`OversizeLayer`]: tonic answers a request message above the server's decoding
//! limit with `OUT_OF_RANGE` before any handler runs. To a caller that is a bad
//! request like any other, and sluice's protos promise `INVALID_ARGUMENT` for
//! every request it cannot take, so the layer rewrites that one answer (trailers
//! only, so the status is in the response headers). sluice's handlers never answer
//! `OUT_OF_RANGE` themselves, so nothing else is touched.
//!
//! [`not_serving_on_shutdown`]: `grpc.health.v1` says `NOT_SERVING` as soon as
//! the shutdown begins, so load balancers and clients move away before the
//! server stops accepting.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderValue;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// gRPC's `grpc-message` escapes `%` and everything outside printable ASCII.
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// Maps tonic's `OUT_OF_RANGE` for an oversize request to `INVALID_ARGUMENT`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OversizeLayer;

impl<S> tower_layer::Layer<S> for OversizeLayer {
    type Service = Oversize<S>;

    fn layer(&self, inner: S) -> Oversize<S> {
        Oversize { inner }
    }
}

/// The service [`OversizeLayer`] wraps.
#[derive(Debug, Clone)]
pub struct Oversize<S> {
    inner: S,
}

impl<S, Req, B> tower_service::Service<Req> for Oversize<S>
where
    S: tower_service::Service<Req, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            rewrite(resp.headers_mut());
            Ok(resp)
        })
    }
}

fn rewrite(headers: &mut http::HeaderMap) {
    // 11 = OUT_OF_RANGE, 3 = INVALID_ARGUMENT.
    if headers.get("grpc-status").is_none_or(|v| v.as_bytes() != b"11") {
        return;
    }
    let said = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(|v| percent_decode_str(v).decode_utf8_lossy().into_owned())
        .unwrap_or_default();
    let message = format!("the request message is larger than this server accepts ({said})");
    headers.insert("grpc-status", HeaderValue::from_static("3"));
    if let Ok(v) = HeaderValue::from_str(&utf8_percent_encode(&message, GRPC_MESSAGE).to_string()) {
        headers.insert("grpc-message", v);
    }
}

/// Sets service `S` to `NOT_SERVING` on `health` once `shutdown` is cancelled.
pub fn not_serving_on_shutdown<S: tonic::server::NamedService>(
    health: tonic_health::server::HealthReporter,
    shutdown: tokio_util::sync::CancellationToken,
) {
    tokio::spawn(async move {
        shutdown.cancelled().await;
        health.set_not_serving::<S>().await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_out_of_range_is_rewritten_and_the_message_survives() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("11"));
        h.insert("grpc-message", HeaderValue::from_static("Error,%20decoded%20message%20length%20too%20large"));
        rewrite(&mut h);
        assert_eq!(h["grpc-status"], "3");
        let m = percent_decode_str(h["grpc-message"].to_str().unwrap()).decode_utf8_lossy().into_owned();
        assert_eq!(m, "the request message is larger than this server accepts (Error, decoded message length too large)");
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("13"));
        rewrite(&mut h);
        assert_eq!(h["grpc-status"], "13");
        assert!(h.get("grpc-message").is_none());
    }
}
