//! The response off the wire: its head, checked, and its body's framing
//! (RFC 9112 §6.3): a length, chunks and trailers, or the end of the connection.

use std::io;
use std::mem::MaybeUninit;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};
use http_body::Frame;

use super::{Conn, invalid};
use crate::http::headers::connection_has;

/// Most fields a response head, or a chunked body's trailers, may carry: hyper's
/// and Envoy's default.
pub(super) const MAX_HEADERS: usize = 100;
/// Largest response head (or trailer block) accepted; Envoy's default is 60 KiB.
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;

/// A response head, read and checked.
pub(super) struct Head {
    pub(super) status: StatusCode,
    pub(super) version: Version,
    pub(super) headers: HeaderMap,
    /// A reason phrase other than the status's usual one, passed on as hyper does.
    pub(super) reason: Option<hyper::ext::ReasonPhrase>,
    pub(super) keep_alive: bool,
    /// Whether it has Transfer-Encoding and Content-Length fields: noted while
    /// the fields are read, so a message without them costs no lookups.
    pub(super) has_te: bool,
    pub(super) has_cl: bool,
}

impl Conn {
    /// Reads the response head, passing over interim (1xx) answers other than 101.
    pub(super) fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Head>> {
        loop {
            if !self.rbuf.is_empty()
                && let Some(head) = self.parse_head()?
            {
                if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS
                {
                    continue;
                }
                return Poll::Ready(Ok(head));
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Takes a whole head off the front of `rbuf`; None: not all here yet. Field
    /// values stay slices of the bytes read, as hyper keeps them.
    fn parse_head(&mut self) -> io::Result<Option<Head>> {
        let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            &self.rbuf,
            &mut fields,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
            Ok(httparse::Status::Partial) if self.rbuf.len() < MAX_HEAD => return Ok(None),
            Ok(_) => return Err(invalid("response head too large")),
            Err(_) => return Err(invalid("malformed response head")),
        };
        let status = resp
            .code
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or_else(|| invalid("bad response status"))?;
        let version = match resp.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        // Where each field lies in the head, kept across the split below; a head is
        // at most MAX_HEAD bytes, so offsets fit in u32. httparse hands back a
        // static "" rather than a slice of the head for a reason phrase that is not
        // UTF-8, so a slice outside the head is no span (never an offset).
        let base = self.rbuf.as_ptr() as usize;
        let at = |s: &[u8]| {
            let offset = (s.as_ptr() as usize).checked_sub(base)?;
            (offset + s.len() <= len).then_some((offset as u32, s.len() as u32))
        };
        let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
        let count = resp.headers.len();
        for (span, f) in spans.iter_mut().zip(resp.headers.iter()) {
            let (Some((name, name_len)), Some((value, value_len))) =
                (at(f.name.as_bytes()), at(f.value))
            else {
                return Err(invalid("malformed response head"));
            };
            *span = (name, name_len, value, value_len);
        }
        let reason = resp
            .reason
            .filter(|r| Some(*r) != status.canonical_reason())
            // An empty one, as hyper makes of it.
            .map(|r| at(r.as_bytes()).unwrap_or((0, 0)));
        let head = self.rbuf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(count);
        let (mut has_connection, mut has_te, mut has_cl) = (false, false, false);
        let range = |at: u32, len: u32| at as usize..(at + len) as usize;
        for &(name, name_len, value, value_len) in &spans[..count] {
            let name = HeaderName::from_bytes(&head[range(name, name_len)])
                .map_err(|_| invalid("bad response field name"))?;
            has_connection |= name == CONNECTION;
            has_te |= name == TRANSFER_ENCODING;
            has_cl |= name == CONTENT_LENGTH;
            let value = HeaderValue::from_maybe_shared(head.slice(range(value, value_len)))
                .map_err(|_| invalid("bad response field value"))?;
            headers.append(name, value);
        }
        let reason = reason.and_then(|(at, len)| {
            hyper::ext::ReasonPhrase::try_from(head.slice(range(at, len))).ok()
        });
        let keep_alive = match version {
            Version::HTTP_10 => has_connection && connection_has(&headers, "keep-alive"),
            _ => !(has_connection && connection_has(&headers, "close")),
        };
        Ok(Some(Head {
            status,
            version,
            headers,
            reason,
            keep_alive,
            has_te,
            has_cl,
        }))
    }

    /// The next frame of a response body framed by `decode`; Ok(None) at its end.
    pub(super) fn poll_decode(
        &mut self,
        decode: &mut Decode,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Option<Frame<Bytes>>>> {
        loop {
            match decode {
                Decode::Done => return Poll::Ready(Ok(None)),
                Decode::Length(left) | Decode::Chunk(Chunk::Data(left)) => {
                    if !self.rbuf.is_empty() {
                        let n = self
                            .rbuf
                            .len()
                            .min(usize::try_from(*left).unwrap_or(usize::MAX));
                        let data = self.rbuf.split_to(n).freeze();
                        *left -= n as u64;
                        if *left == 0 {
                            *decode = match decode {
                                Decode::Length(_) => Decode::Done,
                                _ => Decode::Chunk(Chunk::DataEnd),
                            };
                        }
                        return Poll::Ready(Ok(Some(Frame::data(data))));
                    }
                }
                Decode::Close => {
                    if !self.rbuf.is_empty() {
                        let data = self.rbuf.split().freeze();
                        return Poll::Ready(Ok(Some(Frame::data(data))));
                    }
                    if ready!(self.poll_fill(cx))? == 0 {
                        *decode = Decode::Done;
                        return Poll::Ready(Ok(None));
                    }
                    continue;
                }
                Decode::Chunk(Chunk::Size) => {
                    if let Some(size) = self.take_chunk_size()? {
                        *decode = Decode::Chunk(match size {
                            0 => Chunk::Trailers,
                            n => Chunk::Data(n),
                        });
                        continue;
                    }
                }
                Decode::Chunk(Chunk::DataEnd) => {
                    if self.rbuf.len() >= 2 {
                        if &self.rbuf[..2] != b"\r\n" {
                            return Poll::Ready(Err(invalid("chunk not ended by CRLF")));
                        }
                        self.rbuf.advance(2);
                        *decode = Decode::Chunk(Chunk::Size);
                        continue;
                    }
                }
                Decode::Chunk(Chunk::Trailers) => {
                    if let Some(trailers) = self.take_trailers()? {
                        *decode = Decode::Done;
                        return Poll::Ready(Ok(trailers.map(Frame::trailers)));
                    }
                }
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Takes a chunk-size line (RFC 9112 §7.1), extensions ignored; None: not all
    /// here yet.
    fn take_chunk_size(&mut self) -> io::Result<Option<u64>> {
        let Some(end) = self.rbuf.windows(2).position(|w| w == b"\r\n") else {
            if self.rbuf.len() > MAX_CHUNK_LINE {
                return Err(invalid("chunk-size line too long"));
            }
            return Ok(None);
        };
        let line = &self.rbuf[..end];
        let digits = line
            .iter()
            .position(|b| !b.is_ascii_hexdigit())
            .unwrap_or(line.len());
        let rest = &line[digits..];
        let rest_ok = rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t');
        if digits == 0 || digits > 15 || !rest_ok {
            return Err(invalid("bad chunk size"));
        }
        let hex = std::str::from_utf8(&line[..digits]).map_err(|_| invalid("bad chunk size"))?;
        let size = u64::from_str_radix(hex, 16).map_err(|_| invalid("bad chunk size"))?;
        self.rbuf.advance(end + 2);
        Ok(Some(size))
    }

    /// Takes the trailer section that ends a chunked body: Some(None) when it is
    /// empty; None: not all here yet.
    fn take_trailers(&mut self) -> io::Result<Option<Option<HeaderMap>>> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let (len, trailers) = match httparse::parse_headers(&self.rbuf, &mut fields) {
            Ok(httparse::Status::Complete((len, fields))) => {
                let mut map = HeaderMap::with_capacity(fields.len());
                for f in fields.iter() {
                    let name = HeaderName::from_bytes(f.name.as_bytes())
                        .map_err(|_| invalid("bad trailer name"))?;
                    let value = HeaderValue::from_bytes(f.value)
                        .map_err(|_| invalid("bad trailer value"))?;
                    map.append(name, value);
                }
                (len, (!map.is_empty()).then_some(map))
            }
            Ok(httparse::Status::Partial) if self.rbuf.len() < MAX_HEAD => return Ok(None),
            Ok(httparse::Status::Partial) => return Err(invalid("trailers too large")),
            Err(_) => return Err(invalid("malformed trailers")),
        };
        self.rbuf.advance(len);
        Ok(Some(trailers))
    }
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decode {
    Length(u64),
    Chunk(Chunk),
    /// Until the upstream closes the connection.
    Close,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
}

/// None: a response no body framing can be trusted for (conflicting lengths, a 101
/// nobody asked for).
pub(super) fn decode_for(head: &Head, is_head: bool, upgrade: bool) -> Option<Decode> {
    let status = head.status;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return upgrade.then_some(Decode::Done);
    }
    if is_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Some(Decode::Done);
    }
    if let Some(te) = head
        .has_te
        .then(|| head.headers.get_all(TRANSFER_ENCODING).iter().next_back())
        .flatten()
    {
        let chunked = te
            .to_str()
            .ok()
            .and_then(|s| s.rsplit(',').next())
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        return Some(if chunked {
            Decode::Chunk(Chunk::Size)
        } else {
            Decode::Close
        });
    }
    let mut length = None;
    let lengths = head.has_cl.then(|| head.headers.get_all(CONTENT_LENGTH));
    for v in lengths.iter().flatten() {
        let n: u64 = v.to_str().ok()?.trim().parse().ok()?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    Some(match length {
        Some(0) => Decode::Done,
        Some(n) => Decode::Length(n),
        None => Decode::Close,
    })
}
