//! The email receiver against a scripted SMTP server on loopback: what it
//! delivers (envelope, login, subject, every alert in the body), and how a
//! transient (4xx), a permanent (5xx) and a missing server are classified.

use std::sync::{Arc, Mutex};

use base64::Engine;
use secrecy::SecretString;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::{Receiver, SendError};
use crate::config::{EmailConfig, ReceiverConfig, ReceiverKind, SmtpTls};
use crate::eval::tests_support::alert;
use crate::payload::Notification;
use crate::rules::Severity;

const PASSWORD: &str = "hunter2-smtp-password";

/// What the server saw.
#[derive(Default, Debug)]
struct Seen {
    logins: Vec<String>,
    mail_from: Vec<String>,
    rcpt_to: Vec<String>,
    messages: Vec<String>,
}

/// A scripted SMTP server: `rcpt` and `data` are its answers to each RCPT TO
/// and to the end of each message.
async fn server(rcpt: &'static str, data: &'static str) -> (u16, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"220 mock.local ESMTP ready\r\n").await.unwrap();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: String = if upper.starts_with("EHLO") {
                        "250-mock.local\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME".into()
                    } else if let Some(b64) = upper.strip_prefix("AUTH PLAIN ").map(|_| &line["AUTH PLAIN ".len()..]) {
                        let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).unwrap_or_default();
                        s.lock().unwrap().logins.push(String::from_utf8_lossy(&raw).into_owned());
                        "235 2.7.0 authenticated".into()
                    } else if upper.starts_with("MAIL FROM:") {
                        s.lock().unwrap().mail_from.push(line[10..].to_owned());
                        "250 2.1.0 ok".into()
                    } else if upper.starts_with("RCPT TO:") {
                        s.lock().unwrap().rcpt_to.push(line[8..].to_owned());
                        rcpt.into()
                    } else if upper == "DATA" {
                        w.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await.unwrap();
                        let mut message = Vec::new();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            message.push(l);
                        }
                        s.lock().unwrap().messages.push(message.join("\r\n"));
                        data.into()
                    } else if upper == "QUIT" {
                        let _ = w.write_all(b"221 2.0.0 bye\r\n").await;
                        return;
                    } else if upper == "RSET" || upper == "NOOP" {
                        "250 2.0.0 ok".into()
                    } else {
                        "502 5.5.2 command not recognized".into()
                    };
                    if w.write_all(format!("{reply}\r\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

fn receiver(port: u16) -> Receiver {
    Receiver::new(ReceiverConfig {
        name: "mail".into(),
        kind: ReceiverKind::Email,
        secret: Some(SecretString::from(PASSWORD.to_owned())),
        url: None,
        timeout_ms: 2_000,
        email: Some(EmailConfig {
            host: "127.0.0.1".into(),
            port,
            tls: SmtpTls::None,
            username: Some("alerts".into()),
            from: "sluice <alerts@example.com>".parse().unwrap(),
            to: vec!["ops@example.com".parse().unwrap(), "On Call <oncall@example.com>".parse().unwrap()],
        }),
    })
}

fn notification() -> Notification {
    let mut a = alert([("alertname".to_owned(), "ExchangeErrorRate".to_owned()), ("exchange".to_owned(), "upbit".to_owned())].into());
    a.severity = Severity::Critical;
    a.summary = "upbit: 100 % errors over 1m".into();
    Notification {
        receiver: "mail".into(),
        group_key: "0:{alertname=\"ExchangeErrorRate\",exchange=\"upbit\"}".into(),
        group_labels: a.labels.clone(),
        firing: vec![a],
        resolved: vec![],
        triage: Some("upbit REST answers 503; the other venues are healthy.".into()),
    }
}

/// The message's body, undone from its transfer encoding.
fn body(message: &str) -> String {
    let (head, body) = message.split_once("\r\n\r\n").expect("headers and body");
    let head = head.to_ascii_lowercase();
    if head.contains("content-transfer-encoding: base64") {
        let joined: String = body.split("\r\n").collect();
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(joined).unwrap()).unwrap()
    } else if head.contains("content-transfer-encoding: quoted-printable") {
        let joined = body.replace("=\r\n", "");
        let mut out = Vec::new();
        let b = joined.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'=' && i + 3 <= b.len() {
                out.push(u8::from_str_radix(&joined[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    } else {
        body.to_owned()
    }
}

#[tokio::test]
async fn an_alert_is_mailed_to_every_recipient_after_logging_in() {
    let (port, seen) = server("250 2.1.5 ok", "250 2.0.0 queued as 42").await;
    let r = receiver(port);
    assert_eq!(r.send(&notification()).await, Ok("SMTP 250".into()));

    let seen = seen.lock().unwrap();
    assert_eq!(seen.logins, vec![format!("\0alerts\0{PASSWORD}")]);
    assert_eq!(seen.mail_from.len(), 1);
    assert!(seen.mail_from[0].contains("<alerts@example.com>"), "{:?}", seen.mail_from);
    assert_eq!(seen.rcpt_to.len(), 2, "{:?}", seen.rcpt_to);
    assert!(seen.rcpt_to.iter().any(|t| t.contains("<oncall@example.com>")));
    let message = &seen.messages[0];
    assert!(message.contains("Subject: [FIRING:1] ExchangeErrorRate upbit\r\n"), "{message}");
    assert!(message.contains("From: sluice <alerts@example.com>"), "{message}");
    let text = body(message);
    for part in [
        "upbit: 100 % errors over 1m",
        "ExchangeErrorRate [firing, critical]",
        "labels: alertname=ExchangeErrorRate, exchange=upbit",
        "Triage: upbit REST answers 503",
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }
    assert!(!message.contains(PASSWORD));
}

#[tokio::test]
async fn a_transient_refusal_is_retried_and_a_permanent_one_is_not() {
    let (port, _) = server("250 2.1.5 ok", "451 4.3.0 try again later").await;
    let err = receiver(port).send(&notification()).await.unwrap_err();
    assert!(matches!(&err, SendError::Retry { .. }), "{err:?}");
    assert!(err.to_string().contains("451"), "{err}");

    let (port, _) = server("550 5.1.1 no such mailbox", "250 ok").await;
    let r = receiver(port);
    let err = r.send(&notification()).await.unwrap_err();
    assert!(matches!(&err, SendError::Refused(_)), "{err:?}");
    assert!(!err.to_string().contains(PASSWORD) && !format!("{r:?}").contains(PASSWORD));
}

#[tokio::test]
async fn a_server_that_is_not_there_is_retried() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = receiver(port).send(&notification()).await.unwrap_err();
    assert!(matches!(&err, SendError::Retry { .. }), "{err:?}");
}
