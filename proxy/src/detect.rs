//! Protocol detection: read the first bytes a client sends and decide HTTP/2 (prior
//! knowledge preface), HTTP/1 (a request line), TLS, or opaque TCP. The bytes read
//! are replayed to whoever handles the connection next.
//!
//! Detection is bounded by a timeout: in server-speaks-first protocols (MySQL, NATS,
//! SMTP) the client says nothing until the server greets it, so waiting longer would
//! deadlock; on timeout the connection is treated as opaque.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::io::PrefixedIo;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest method token we accept before the first space of an HTTP/1 request line.
const MAX_METHOD_LEN: usize = 24;
/// Longest request line read while telling an unusual method from another protocol.
const MAX_LINE: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detected {
    Http1,
    Http2,
    Tls,
    Opaque,
}

enum Verdict {
    Done(Detected),
    NeedMore,
}

/// Classifies every prefix of `bytes`, as they could arrive: once a prefix is
/// decided, every longer one must be decided the same (the fuzz target's check).
#[cfg(feature = "fuzzing")]
pub(crate) fn classify_every_prefix(bytes: &[u8]) {
    let mut decided = None;
    for end in 0..=bytes.len() {
        if let Verdict::Done(d) = classify(&bytes[..end]) {
            match decided {
                None => decided = Some(d),
                Some(first) => assert_eq!(first, d, "decided {first:?}, then {d:?} at {end}"),
            }
        }
    }
}

fn classify(buf: &[u8]) -> Verdict {
    if buf.is_empty() {
        return Verdict::NeedMore;
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Verdict::Done(Detected::Http2)
        } else {
            Verdict::NeedMore
        };
    }
    // A TLS record header: handshake (22), major version 3.
    if buf[0] == 0x16 {
        return match buf.get(1) {
            None => Verdict::NeedMore,
            Some(3) => Verdict::Done(Detected::Tls),
            Some(_) => Verdict::Done(Detected::Opaque),
        };
    }
    // An HTTP/1 request line starts with a method token (RFC 9110 tchar) and a space.
    // The usual upper-case methods decide at the space. Any other token (`get`, an
    // extension method) is HTTP/1 only once the line shows its ` HTTP/1.` version,
    // so a text protocol that happens to start with a word and a space stays opaque.
    let mut plain = true;
    for (i, &b) in buf.iter().enumerate() {
        match b {
            b' ' if i > 0 && plain => return Verdict::Done(Detected::Http1),
            b' ' if i > 0 => return request_line(&buf[i..]),
            b'A'..=b'Z' | b'-' | b'_' if i < MAX_METHOD_LEN => {}
            _ if i < MAX_METHOD_LEN && is_tchar(b) => plain = false,
            _ => return Verdict::Done(Detected::Opaque),
        }
    }
    Verdict::NeedMore
}

/// The rest of a request line after its method: ` target HTTP/1.x` before the line
/// ends, within `MAX_LINE` bytes.
fn request_line(rest: &[u8]) -> Verdict {
    match rest.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
            let versioned = line.len() >= 9 && line[line.len() - 9..line.len() - 1] == *b" HTTP/1.";
            Verdict::Done(if versioned {
                Detected::Http1
            } else {
                Detected::Opaque
            })
        }
        None if rest.len() < MAX_LINE => Verdict::NeedMore,
        None => Verdict::Done(Detected::Opaque),
    }
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Reads until the protocol is known, EOF, or `timeout`. Returns the stream with the
/// consumed bytes put back in front.
pub(crate) async fn detect<T>(
    mut io: T,
    timeout: Duration,
) -> std::io::Result<(Detected, PrefixedIo<T>)>
where
    T: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(64);
    let deadline = tokio::time::Instant::now() + timeout;
    let verdict = loop {
        match classify(&buf) {
            Verdict::Done(d) => break d,
            Verdict::NeedMore => {}
        }
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Ok(Ok(0)) => break Detected::Opaque,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_elapsed) => break Detected::Opaque,
        }
    };
    Ok((verdict, PrefixedIo::new(buf.freeze(), io)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn run(input: &[u8], close: bool) -> (Detected, Vec<u8>) {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(input).await.expect("write");
        if close {
            client.shutdown().await.expect("shutdown");
        }
        let (d, mut io) = detect(server, Duration::from_millis(100))
            .await
            .expect("detect");
        drop(client);
        let mut replay = Vec::new();
        io.read_to_end(&mut replay).await.expect("read");
        (d, replay)
    }

    #[tokio::test]
    async fn detects_and_replays_every_byte() {
        let cases: &[(&[u8], Detected)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Detected::Http1),
            (b"M-SEARCH * HTTP/1.1\r\n", Detected::Http1),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nrest", Detected::Http2),
            (b"\x16\x03\x01\x02\x00", Detected::Tls),
            (b"\x00\x00\x00\x01binary", Detected::Opaque),
            (b"get / HTTP/1.1\r\n", Detected::Http1),
            (b"purge /cache HTTP/1.0\nHost: a\n\n", Detected::Http1),
            (b"set key value\r\n", Detected::Opaque),
            (b"get / HTTP/2\r\n", Detected::Opaque),
        ];
        for (input, want) in cases {
            let (got, replay) = run(input, true).await;
            assert_eq!(got, *want, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(&replay, input);
        }
    }

    #[tokio::test]
    async fn silent_client_times_out_as_opaque() {
        let (_client, server) = tokio::io::duplex(64);
        let (d, _) = detect(server, Duration::from_millis(50))
            .await
            .expect("detect");
        assert_eq!(d, Detected::Opaque);
    }

    #[tokio::test]
    async fn partial_preface_then_eof_is_opaque() {
        let (d, replay) = run(b"PRI * HTTP", true).await;
        assert_eq!(d, Detected::Opaque);
        assert_eq!(replay, b"PRI * HTTP");
    }
}
