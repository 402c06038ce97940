//! The load tester against local servers whose behaviour is known: a latency
//! distribution, failures of every kind, and a stall.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use sluice_loadtest::serve::{Delays, serve};
use sluice_loadtest::stats::LevelReport;
use sluice_loadtest::target::{HttpTarget, WsTarget};
use sluice_loadtest::{Plan, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `serve` stops when the sender is dropped (at the end of the test).
fn stopper() -> (tokio::sync::oneshot::Sender<()>, impl std::future::Future<Output = ()> + Send + 'static) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    (tx, async move {
        let _ = rx.await;
    })
}

fn plan(levels: &[usize], requests: u64) -> Plan {
    Plan { levels: levels.to_vec(), requests, timeout: Duration::from_secs(10), warmup: 0, level_time: None, rate: None, progress: false }
}

fn http(url: &str) -> Target {
    Target::Http(HttpTarget::new(url, "GET", &[], Bytes::new()).unwrap())
}

async fn one_level(target: Target, plan: &Plan) -> LevelReport {
    let r = sluice_loadtest::run(target, plan, &[], false, &mut |_| {}).await.unwrap();
    r.levels.into_iter().next().unwrap()
}

/// 1,000 requests see exactly 900 delays of 5 ms, 60 of 20 ms and 40 of 80 ms:
/// the true p50 is 5 ms, p95 20 ms, p99 80 ms. What the tool reports is never
/// below them (a latency includes the delay) and above them only by the
/// loopback round trip and timer rounding, far less than the gaps between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percentiles_of_a_known_distribution() {
    let (_stop, stopped) = stopper();
    let delays: Delays = "5ms:90,20ms:6,80ms:4".parse().unwrap();
    let s = serve("127.0.0.1:0".parse().unwrap(), &delays, Duration::from_millis(100), stopped).await.unwrap();
    let level = one_level(http(&format!("http://{}/x", s.addr)), &plan(&[10], 100)).await;
    assert_eq!((level.total, level.succeeded, level.failed), (1000, 1000, 0));
    assert_eq!(level.statuses.get("200"), Some(&1000));
    let l = level.latency_ms.unwrap();
    assert!((5.0..15.0).contains(&l.p50), "p50 {l:?}");
    assert!((20.0..60.0).contains(&l.p95), "p95 {l:?}");
    assert!((80.0..150.0).contains(&l.p99), "p99 {l:?}");
    assert!(l.min >= 5.0 && l.max >= 80.0, "{l:?}");
    // The mean of the delays is 0.9*5 + 0.06*20 + 0.04*80 = 8.9 ms.
    assert!((8.9..14.0).contains(&l.avg), "avg {l:?}");
    assert!(level.rps > 0.0 && level.duration_s > 0.0);
}

/// A raw HTTP/1.1 server whose answer depends on the path: `/ok` 200, `/fail`
/// 500, `/hang` never, `/reset` a TCP reset, `/close` a close without answer.
async fn misbehaving() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(connection(sock));
        }
    });
    addr
}

async fn connection(mut sock: TcpStream) {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 1024];
        let n = match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            buf.drain(..end + 4);
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let reply: &[u8] = match path.as_str() {
                "/ok" => b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n",
                "/fail" => b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 5\r\n\r\nfail\n",
                "/hang" => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                "/reset" => {
                    #[allow(deprecated)]
                    let _ = sock.set_linger(Some(Duration::ZERO));
                    return;
                }
                _ => return,
            };
            if sock.write_all(reply).await.is_err() {
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_timeouts_and_refusals_are_counted_and_classified() {
    let addr = misbehaving().await;
    let mut p = plan(&[3], 4);
    p.timeout = Duration::from_millis(200);

    let fail = one_level(http(&format!("http://{addr}/fail")), &p).await;
    assert_eq!((fail.total, fail.failed), (12, 12));
    assert_eq!(fail.statuses.get("500"), Some(&12));
    assert!(fail.errors.is_empty());
    // A 500 is an answer: it is timed.
    assert!(fail.latency_ms.is_some());
    assert!((fail.error_rate - 1.0).abs() < 1e-12);

    let hang = one_level(http(&format!("http://{addr}/hang")), &p).await;
    assert_eq!(hang.errors.get("timeout"), Some(&12), "{hang:?}");
    assert!(hang.latency_ms.is_none(), "timeouts are not latencies");

    let reset = one_level(http(&format!("http://{addr}/reset")), &p).await;
    assert_eq!(reset.errors.get("reset"), Some(&12), "{reset:?}");

    let closed = one_level(http(&format!("http://{addr}/close")), &p).await;
    assert_eq!(closed.errors.get("closed"), Some(&12), "{closed:?}");

    // Nothing listens on a port just freed.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let refused = one_level(http(&format!("http://127.0.0.1:{port}/ok")), &p).await;
    assert_eq!(refused.errors.get("refused"), Some(&12), "{refused:?}");
    assert_eq!(refused.succeeded, 0);

    // And the good path on the same server, for contrast.
    let ok = one_level(http(&format!("http://{addr}/ok")), &p).await;
    assert_eq!((ok.total, ok.succeeded), (12, 12));
}

/// An HTTP server answering in 1 ms, except that its 100th request stalls it:
/// every request in the next 500 ms waits until the stall ends.
async fn stalling() -> std::net::SocketAddr {
    use axum::routing::get;
    #[derive(Default)]
    struct S {
        n: AtomicU64,
        until: std::sync::Mutex<Option<tokio::time::Instant>>,
    }
    let s = Arc::new(S::default());
    let app = axum::Router::new().route(
        "/",
        get(move || {
            let s = s.clone();
            async move {
                if s.n.fetch_add(1, Ordering::SeqCst) == 99 {
                    *s.until.lock().unwrap() = Some(tokio::time::Instant::now() + Duration::from_millis(500));
                }
                let until = *s.until.lock().unwrap();
                match until {
                    Some(t) if t > tokio::time::Instant::now() => tokio::time::sleep_until(t).await,
                    _ => tokio::time::sleep(Duration::from_millis(1)).await,
                }
                "ok"
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Closed loop, the stall holds up only the four requests in flight, and the
/// senders wait with them: p95 stays fast, the stall is hidden. Open loop at 200
/// requests/s, the ~100 requests due during the stall are counted from when they
/// were due: they start late and the p95 shows the stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_reports_the_requests_a_stall_delayed() {
    let closed = one_level(http(&format!("http://{}/", stalling().await)), &plan(&[4], 75)).await;
    let c = closed.latency_ms.clone().unwrap();
    assert_eq!(closed.succeeded, 300);
    assert!(c.max >= 400.0, "the stall itself is seen: {c:?}");
    assert!(c.p95 < 100.0, "closed loop hides it: {c:?}");
    assert_eq!(closed.late_starts, None);

    let mut p = plan(&[4], 75);
    p.rate = Some(200.0);
    let open = one_level(http(&format!("http://{}/", stalling().await)), &p).await;
    let o = open.latency_ms.clone().unwrap();
    assert_eq!(open.succeeded, 300);
    assert!(o.p95 >= 200.0, "open loop shows it: {o:?}");
    let late = open.late_starts.unwrap();
    assert!(late >= 50, "requests due during the stall start late: {late}");
    // 300 requests at 200/s take 1.5 s, stall included.
    assert!(open.duration_s >= 1.4, "{}", open.duration_s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_sessions_time_the_first_message_and_count_the_rest() {
    let (_stop, stopped) = stopper();
    let s = serve("127.0.0.1:0".parse().unwrap(), &"2ms".parse().unwrap(), Duration::from_millis(10), stopped).await.unwrap();
    let target = WsTarget::new(&format!("ws://{}/ws", s.addr), Some(r#"{"op":"subscribe"}"#.into()), Duration::from_millis(300)).unwrap();
    let level = one_level(Target::WebSocket(target), &plan(&[3], 100)).await;
    // One session per client, whatever --requests says.
    assert_eq!((level.total, level.succeeded), (3, 3));
    assert_eq!(level.statuses.get("101"), Some(&3));
    assert!(level.latency_ms.unwrap().min >= 2.0);
    let messages = level.messages.unwrap();
    assert!(messages >= 3 * 10, "300 ms at one per 10 ms per client: {messages}");

    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let none = WsTarget::new(&format!("ws://127.0.0.1:{port}/ws"), None, Duration::from_millis(10)).unwrap();
    let refused = one_level(Target::WebSocket(none), &plan(&[2], 1)).await;
    assert_eq!(refused.errors.get("refused"), Some(&2), "{refused:?}");
}

#[tokio::test]
async fn a_plan_that_cannot_run_is_refused_with_its_reason() {
    let t = || http("http://127.0.0.1:9/");
    for (p, want) in [
        (plan(&[], 1), "no concurrency levels"),
        (plan(&[10, 0], 1), "level of 0"),
        (plan(&[1], 0), "--requests"),
        (Plan { rate: Some(0.0), ..plan(&[1], 1) }, "--rate"),
    ] {
        let e = sluice_loadtest::run(t(), &p, &[], false, &mut |_| {}).await.unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
    let e = sluice_loadtest::run(http("http://192.0.2.7/"), &plan(&[1], 1), &[], false, &mut |_| {}).await.unwrap_err();
    assert!(e.to_string().contains("--allow-remote"), "{e}");
}
