//! The console's HTTP/1.1 connections over TLS, driven byte by byte: a request answered
//! before its body has arrived must leave the connection usable (or say
//! `Connection: close`), because clients reuse a connection whose answer promised
//! keep-alive; and an oversized body is refused without being read.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};

use super::harness::Gateway;

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to the console that trusts only the gateway's root CA.
fn connect(gw: &Gateway) -> Tls {
    let (status, der) = gw.http_get("/pki/root.crt");
    assert_eq!(status, 200, "the root CA certificate is published");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(der)).expect("root CA");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("localhost").expect("server name");
    let connection = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS client");
    let socket = TcpStream::connect(("127.0.0.1", gw.console)).expect("connect console");
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    rustls::StreamOwned::new(connection, socket)
}

/// One response: its head (lower-cased header names) and body, read by Content-Length.
fn read_response(tls: &mut Tls) -> std::io::Result<(String, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tls.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end..].to_vec();
    while body.len() < length {
        let n = tls.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok((head, body))
}

#[test]
fn an_answer_given_before_the_body_arrived_leaves_the_connection_usable() {
    let gw = Gateway::start(|_| {});
    let body = br#"{"network": "10.0.0.0/8"}"#;
    for content_type in ["application/json", "text/plain"] {
        let mut tls = connect(&gw);
        // No credentials: the answer (401) does not depend on the body, and the body
        // comes in its own TLS record after the answer could have been written.
        write!(
            tls,
            "POST /api/v1/settings/networks HTTP/1.1\r\nHost: localhost\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .expect("send head");
        tls.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(300));
        tls.write_all(body).expect("send body");
        tls.flush().expect("flush");
        let (head, _) = read_response(&mut tls).expect("first answer");
        assert!(head.starts_with("http/1.1 401"), "{head}");
        assert!(
            !head.contains("connection: close"),
            "a body the server had room for is read, the connection kept:\n{head}"
        );
        // The same connection carries the next request.
        tls.write_all(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .expect("send second request");
        tls.flush().expect("flush");
        let (head, body) = read_response(&mut tls).unwrap_or_else(|e| {
            panic!("the connection was closed after an answer that kept it open ({content_type}): {e}\n{}", gw.log())
        });
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(
            String::from_utf8_lossy(&body).contains("openapi"),
            "the second answer is the OpenAPI document"
        );
    }
}

#[test]
fn an_oversized_body_is_refused_unread_and_the_connection_closed() {
    let gw = Gateway::start(|_| {});
    let mut tls = connect(&gw);
    write!(
        tls,
        "POST /api/v1/settings/networks HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{{",
        64 * 1024 * 1024
    )
    .expect("send head");
    tls.flush().expect("flush");
    let (head, _) = read_response(&mut tls).expect("answer");
    assert!(head.starts_with("http/1.1 413"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
}
