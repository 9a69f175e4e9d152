//! Downloading a CRL: one HTTP/1.1 GET over plain TCP (RFC 5280 §4.2.1.13 distribution
//! points are `http://` URLs; CRLs are signed, so TLS adds nothing), bounded in time
//! (connect, request and body together) and in size. No redirects, no proxies, no
//! content encodings: a distribution point that needs any of them is not usable.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest response header section read.
const MAX_HEADER_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("not an http:// URL ({0})")]
    Url(String),
    #[error("no answer within {0} s")]
    Timeout(u64),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("connection failed: {0}")]
    Io(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("malformed HTTP response: {0}")]
    Protocol(String),
    #[error("larger than {0} bytes")]
    TooLarge(usize),
}

/// Where a URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Host as written (without brackets for IPv6).
    pub host: String,
    pub port: u16,
    /// The Host header value (host and any port, as written).
    pub authority: String,
    pub path: String,
}

/// Parses `http://host[:port][/path]` (no user info, no fragment sent).
pub fn parse_url(url: &str) -> Result<HttpUrl, FetchError> {
    let bad = || FetchError::Url(url.to_string());
    let scheme_end = url.find("://").ok_or_else(bad)?;
    if !url[..scheme_end].eq_ignore_ascii_case("http") {
        return Err(bad());
    }
    let rest = &url[scheme_end + 3..];
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = path.split('#').next().unwrap_or("/");
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    if authority.is_empty()
        || authority.contains('@')
        || path.bytes().any(|b| b.is_ascii_control() || b == b' ')
    {
        return Err(bad());
    }
    let (host, port) = match crate::config::split_hop(authority) {
        Some((host, port)) => (host.to_string(), port.unwrap_or(80)),
        None => return Err(bad()),
    };
    if host.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(bad());
    }
    Ok(HttpUrl {
        host,
        port,
        authority: authority.to_string(),
        path,
    })
}

/// GETs `url`, returning the body. `timeout` bounds the whole exchange; a body larger
/// than `max_bytes` is refused as soon as that is known.
pub async fn get(url: &str, timeout: Duration, max_bytes: usize) -> Result<Vec<u8>, FetchError> {
    let target = parse_url(url)?;
    match tokio::time::timeout(timeout, exchange(&target, max_bytes)).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout(timeout.as_secs().max(1))),
    }
}

async fn exchange(target: &HttpUrl, max_bytes: usize) -> Result<Vec<u8>, FetchError> {
    let io = |e: std::io::Error| FetchError::Io(e.to_string());
    let mut stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| FetchError::Connect(e.to_string()))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: smimegate\r\n\
         Accept: application/pkix-crl, application/x-pkcs7-crl, */*\r\n\
         Accept-Encoding: identity\r\nConnection: close\r\n\r\n",
        target.path, target.authority
    );
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    // The header section.
    let mut buf = Vec::with_capacity(8192);
    let header_len = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() > MAX_HEADER_BYTES {
            return Err(FetchError::Protocol("header section too long".into()));
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(FetchError::Protocol(
                "connection closed in the header".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    response
        .parse(&buf[..header_len])
        .map_err(|e| FetchError::Protocol(e.to_string()))?;
    let status = response.code.unwrap_or(0);
    if status != 200 {
        return Err(FetchError::Status(status));
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    if header("content-encoding")
        .iter()
        .any(|v| !v.is_empty() && v != "identity")
    {
        return Err(FetchError::Protocol(
            "content encoding not supported".into(),
        ));
    }
    let chunked = header("transfer-encoding")
        .iter()
        .any(|v| v.split(',').any(|t| t.trim() == "chunked"));
    let length = match header("content-length").as_slice() {
        [] => None,
        [one] => Some(
            one.parse::<usize>()
                .map_err(|_| FetchError::Protocol("bad Content-Length".into()))?,
        ),
        _ => return Err(FetchError::Protocol("several Content-Length fields".into())),
    };
    let mut body = buf.split_off(header_len);
    if chunked {
        // The raw chunked body may exceed the content a little (chunk lines).
        let raw_limit = max_bytes.saturating_add(max_bytes / 8).saturating_add(4096);
        read_to_end_limited(&mut stream, &mut body, raw_limit, max_bytes).await?;
        let decoded = dechunk(&body)?;
        if decoded.len() > max_bytes {
            return Err(FetchError::TooLarge(max_bytes));
        }
        return Ok(decoded);
    }
    if let Some(length) = length {
        if length > max_bytes {
            return Err(FetchError::TooLarge(max_bytes));
        }
        while body.len() < length {
            let mut chunk = vec![0u8; (length - body.len()).min(65536)];
            let n = stream.read(&mut chunk).await.map_err(io)?;
            if n == 0 {
                return Err(FetchError::Protocol(format!(
                    "body ended after {} of {length} bytes",
                    body.len()
                )));
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(length);
        return Ok(body);
    }
    read_to_end_limited(&mut stream, &mut body, max_bytes, max_bytes).await?;
    Ok(body)
}

async fn read_to_end_limited(
    stream: &mut tokio::net::TcpStream,
    body: &mut Vec<u8>,
    raw_limit: usize,
    max_bytes: usize,
) -> Result<(), FetchError> {
    loop {
        if body.len() > raw_limit {
            return Err(FetchError::TooLarge(max_bytes));
        }
        let mut chunk = [0u8; 65536];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| FetchError::Io(e.to_string()))?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

/// Decodes a chunked body (RFC 9112 §7.1); trailers are ignored.
fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, FetchError> {
    let bad = |what: &str| FetchError::Protocol(format!("chunked body: {what}"));
    let mut out = Vec::with_capacity(raw.len());
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("no chunk size line"))?;
        let line = std::str::from_utf8(&raw[..line_end]).map_err(|_| bad("size line"))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("chunk size"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size + 2 || &raw[size..size + 2] != b"\r\n" {
            return Err(bad("truncated chunk"));
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_plain_http_with_a_host() {
        let u = parse_url("http://crl.example:8080/ca.crl").expect("url");
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("crl.example", 8080, "/ca.crl")
        );
        let u = parse_url("HTTP://[::1]/x?y=1#frag").expect("url");
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 80, "/x?y=1")
        );
        assert_eq!(parse_url("http://h").expect("url").path, "/");
        for bad in [
            "https://crl.example/ca.crl",
            "ldap://crl.example/cn=x",
            "http:///x",
            "http://user@h/x",
            "http://h/a b",
            "crl.example/ca.crl",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chunked_bodies_decode() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").expect("ok"),
            b"abcde"
        );
        assert!(dechunk(b"5\r\nab\r\n0\r\n\r\n").is_err());
        assert!(dechunk(b"zz\r\n").is_err());
    }
}
