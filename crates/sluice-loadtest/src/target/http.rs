//! HTTP/1.1 over one kept-alive connection per client (TLS when the URL says
//! https), on hyper's connection API directly: no pool, no redirects, nothing
//! between the measurement and the wire, as oha does.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{BadTarget, Conn, Done, host_port};
use crate::stats::{Answer, ErrorKind, Outcome};

/// An HTTP endpoint and the request to send it.
pub struct HttpTarget {
    url: String,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
}

/// One client's HTTP connection.
pub struct HttpConn {
    sender: SendRequest<Full<Bytes>>,
}

impl HttpTarget {
    /// `headers` as `Name: value` lines.
    pub fn new(url: &str, method: &str, headers: &[String], body: Bytes) -> Result<HttpTarget, BadTarget> {
        let bad = |why: &str| BadTarget::Url(url.to_owned(), why.to_owned());
        let uri: Uri = url.parse().map_err(|e: http::uri::InvalidUri| bad(&format!("{e}; write it as http://host:port/path")))?;
        let scheme = uri.scheme_str().ok_or_else(|| bad("it needs http:// or https://"))?;
        if scheme != "http" && scheme != "https" {
            return Err(bad("the scheme must be http or https"));
        }
        let (host, port) = host_port(&uri).ok_or_else(|| bad("it has no host"))?;
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| BadTarget::Other(format!("'{method}' is not an HTTP method")))?;
        let mut map = HeaderMap::new();
        for h in headers {
            let (name, value) = h.split_once(':').ok_or_else(|| BadTarget::Header(h.clone()))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| BadTarget::Header(h.clone()))?;
            let value = HeaderValue::from_str(value.trim()).map_err(|_| BadTarget::Header(h.clone()))?;
            map.append(name, value);
        }
        if !map.contains_key(http::header::HOST) {
            let authority = uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_else(|| host.clone());
            map.insert(http::header::HOST, HeaderValue::from_str(&authority).map_err(|_| bad("its host is not a valid header"))?);
        }
        let tls = if scheme == "https" {
            let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| bad("its host is not a TLS server name"))?;
            Some((tls_connector(), name))
        } else {
            None
        };
        // Only the path and query go on the request line.
        let path: Uri = uri.path_and_query().map_or("/", |p| p.as_str()).parse().map_err(|_| bad("its path is not valid"))?;
        Ok(HttpTarget { url: url.to_owned(), method, uri: path, headers: map, body, host, port, tls })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn describe(&self) -> String {
        format!("HTTP {} {}", self.method, self.url)
    }

    async fn connect(&self) -> Result<HttpConn, ErrorKind> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|e| ErrorKind::of_io(&e))?;
        // Small requests must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let sender = match &self.tls {
            None => handshake(TokioIo::new(tcp)).await?,
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await.map_err(|_| ErrorKind::Tls)?;
                handshake(TokioIo::new(tls)).await?
            }
        };
        Ok(HttpConn { sender })
    }

    /// One request within `timeout`, connecting first when needed.
    pub(super) async fn request(&self, slot: &mut Option<Conn>, timeout: Duration) -> Done {
        let result = tokio::time::timeout(timeout, self.exchange(slot)).await;
        let outcome = match result {
            Ok(Ok(status)) => Outcome::Answer(Answer::Http(status)),
            Ok(Err(kind)) => Outcome::Error(kind),
            // The connection went with the dropped request: the answer may still
            // come on it, so it is never reused.
            Err(_) => Outcome::Error(ErrorKind::Timeout),
        };
        Done::now(outcome)
    }

    /// The connection is taken out of the slot for the request and put back only
    /// when it ended cleanly and the server keeps it open, so a failure or a
    /// timeout (which drops this future) never leaves a broken one behind.
    async fn exchange(&self, slot: &mut Option<Conn>) -> Result<u16, ErrorKind> {
        let mut conn = match slot.take() {
            Some(Conn::Http(c)) if !c.sender.is_closed() => c,
            _ => self.connect().await?,
        };
        conn.sender.ready().await.map_err(|e| kind(&e))?;
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        let resp = conn.sender.send_request(req).await.map_err(|e| kind(&e))?;
        let status = resp.status().as_u16();
        let close = resp.headers().get(http::header::CONNECTION).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        // The whole body is part of the answer.
        resp.into_body().collect().await.map_err(|e| kind(&e))?;
        if !close {
            *slot = Some(Conn::Http(conn));
        }
        Ok(status)
    }
}

async fn handshake<I>(io: I) -> Result<SendRequest<Full<Bytes>>, ErrorKind>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| kind(&e))?;
    tokio::spawn(async move {
        // Ends when the connection closes; its errors surface on the requests.
        let _ = conn.await;
    });
    Ok(sender)
}

/// The kind of a hyper error: its I/O cause when it has one.
fn kind(e: &hyper::Error) -> ErrorKind {
    if e.is_timeout() {
        return ErrorKind::Timeout;
    }
    if let Some(k) = ErrorKind::find_io(e) {
        return k;
    }
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        ErrorKind::Closed
    } else if e.is_parse() || e.is_parse_status() {
        ErrorKind::Protocol
    } else {
        ErrorKind::Other
    }
}

/// A TLS client with the system's roots, speaking HTTP/1.1.
fn tls_connector() -> tokio_rustls::TlsConnector {
    sluice_service::http_client::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A certificate the store cannot parse is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_is_wrong_with_a_target() {
        let e = |url: &str, method: &str, headers: &[&str]| {
            let h: Vec<String> = headers.iter().map(|s| (*s).to_owned()).collect();
            HttpTarget::new(url, method, &h, Bytes::new()).err().map(|e| e.to_string())
        };
        assert!(e("127.0.0.1:8080/x", "GET", &[]).unwrap().contains("http://"));
        assert!(e("ftp://127.0.0.1/x", "GET", &[]).unwrap().contains("scheme"));
        assert!(e("http://127.0.0.1/x", "G ET", &[]).unwrap().contains("method"));
        assert!(e("http://127.0.0.1/x", "GET", &["no-colon"]).unwrap().contains("Name: value"));
        assert_eq!(e("http://127.0.0.1:9/x?y=1", "post", &["X-Key: v"]), None);
    }

    #[test]
    fn sends_path_and_query_and_a_host_header() {
        let t = HttpTarget::new("http://localhost:8080/v1/ticker?markets=KRW-BTC", "GET", &[], Bytes::new()).unwrap();
        assert_eq!(t.uri.to_string(), "/v1/ticker?markets=KRW-BTC");
        assert_eq!(t.headers.get("host").unwrap(), "localhost:8080");
        assert_eq!((t.host.as_str(), t.port), ("localhost", 8080));
        let s = HttpTarget::new("https://api.example.com", "GET", &[], Bytes::new()).unwrap();
        assert_eq!((s.port, s.uri.to_string().as_str()), (443, "/"));
    }
}
