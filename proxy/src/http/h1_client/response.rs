//! The response off the wire: its head, checked, and its body's framing
//! (RFC 9112 §6.3): a length, chunks and trailers, or the end of the connection.

use std::io;
use std::mem::MaybeUninit;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};
use http_body::Frame;

use super::{Conn, invalid};
use crate::http::date;
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
    /// Whether it has Transfer-Encoding and Content-Length fields, and what they
    /// say: noted while the fields are read, so framing costs no lookups.
    pub(super) has_te: bool,
    pub(super) has_cl: bool,
    /// Transfer-Encoding names chunked and nothing else.
    pub(super) chunked: bool,
    pub(super) length: Length,
}

/// What a head's Content-Length fields say, all of them together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Length {
    Absent,
    Is(u64),
    /// A value that is no number, or two that differ: no framing can be trusted.
    Invalid,
}

impl Length {
    /// With one more Content-Length field's value.
    fn and(self, value: &HeaderValue) -> Length {
        match (self, decimal(value.as_bytes().trim_ascii())) {
            (Length::Absent, Some(n)) => Length::Is(n),
            (Length::Is(l), Some(n)) if l == n => self,
            _ => Length::Invalid,
        }
    }
}

/// A decimal number as `u64::from_str` reads one (a leading `+` allowed), without
/// going through `str`.
fn decimal(digits: &[u8]) -> Option<u64> {
    let digits = digits.strip_prefix(b"+").unwrap_or(digits);
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Whether a Transfer-Encoding value is chunked alone.
fn is_chunked(te: &HeaderValue) -> bool {
    te.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// Field names a connection's heads carried, by position: as read, and as parsed.
/// An app answers with the same names in the same order, answer after answer, and
/// comparing a name's bytes with the last head's costs a fraction of parsing it
/// (`HeaderName::from_bytes` validates and lowercases it byte by byte, then matches
/// it against the standard names). The bytes are compared exactly, so a name
/// spelled another way is parsed anew.
#[derive(Default)]
pub(super) struct Names(Vec<(Box<[u8]>, HeaderName)>);

impl Names {
    /// Positions remembered, and the longest name kept: a bound on what a
    /// connection holds, well above what ordinary answers carry.
    const KEPT: usize = 32;
    const LONGEST: usize = 64;

    /// The name of field `i`, `raw` as read.
    fn parse(&mut self, i: usize, raw: &[u8]) -> io::Result<HeaderName> {
        if let Some((seen, name)) = self.0.get(i)
            && **seen == *raw
        {
            return Ok(name.clone());
        }
        let name = HeaderName::from_bytes(raw).map_err(|_| invalid("bad response field name"))?;
        if i < Self::KEPT && raw.len() <= Self::LONGEST {
            let entry = (Box::from(raw), name.clone());
            if let Some(kept) = self.0.get_mut(i) {
                *kept = entry;
            } else if i == self.0.len() {
                // A head's fields come in order: i extends the positions kept.
                self.0.push(entry);
            }
        }
        Ok(name)
    }
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
        let spans = &mut self.spans;
        spans.clear();
        for f in resp.headers.iter() {
            let (Some((name, name_len)), Some((value, value_len))) =
                (at(f.name.as_bytes()), at(f.value))
            else {
                return Err(invalid("malformed response head"));
            };
            spans.push((name, name_len, value, value_len));
        }
        let reason = resp
            .reason
            .filter(|r| Some(*r) != status.canonical_reason())
            // An empty one, as hyper makes of it.
            .map(|r| at(r.as_bytes()).unwrap_or((0, 0)));
        let head = self.rbuf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(self.spans.len());
        let (mut has_connection, mut has_te, mut has_cl) = (false, false, false);
        let (mut chunked, mut length) = (false, Length::Absent);
        let range = |at: u32, len: u32| at as usize..(at + len) as usize;
        for (i, &(name, name_len, value, value_len)) in self.spans.iter().enumerate() {
            let name = self.names.parse(i, &head[range(name, name_len)])?;
            let value = range(value, value_len);
            if self.leave_date && name == DATE && date::is_now(&head[value.clone()]) {
                continue;
            }
            let value = HeaderValue::from_maybe_shared(head.slice(value))
                .map_err(|_| invalid("bad response field value"))?;
            if name == CONNECTION {
                has_connection = true;
            } else if name == TRANSFER_ENCODING {
                chunked = !has_te && is_chunked(&value);
                has_te = true;
            } else if name == CONTENT_LENGTH {
                has_cl = true;
                length = length.and(&value);
            }
            headers.append(name, value);
        }
        // Chunked overrules a Content-Length (RFC 9112 §6.3), which a proxy must
        // then drop before forwarding: left on, it frames the answer again the
        // next hop, which finds the body a different length and fails it.
        if has_te && has_cl {
            headers.remove(CONTENT_LENGTH);
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
            chunked,
            length,
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
/// nobody asked for), or one with a transfer coding other than chunked: the coding
/// is this hop's alone, so its body would reach the client still coded and with
/// nothing naming the coding.
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
    if head.has_te {
        return head.chunked.then_some(Decode::Chunk(Chunk::Size));
    }
    match head.length {
        Length::Invalid => None,
        Length::Is(0) => Some(Decode::Done),
        Length::Is(n) => Some(Decode::Length(n)),
        Length::Absent => Some(Decode::Close),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lengths(values: &[&'static str]) -> Length {
        values
            .iter()
            .fold(Length::Absent, |l, v| l.and(&HeaderValue::from_static(v)))
    }

    #[test]
    fn content_lengths_are_read_as_str_parse_reads_them_and_must_agree() {
        assert_eq!(lengths(&[]), Length::Absent);
        assert_eq!(lengths(&["64"]), Length::Is(64));
        assert_eq!(lengths(&[" 7\t"]), Length::Is(7));
        assert_eq!(lengths(&["+5"]), Length::Is(5), "as u64::from_str");
        assert_eq!(lengths(&["5", "5"]), Length::Is(5));
        assert_eq!(lengths(&["18446744073709551615"]), Length::Is(u64::MAX));
        for bad in [
            &["5", "6"][..],
            &["5, 5"],
            &[""],
            &["+"],
            &["-1"],
            &["0x10"],
            &["18446744073709551616"],
        ] {
            assert_eq!(lengths(bad), Length::Invalid, "{bad:?}");
        }
    }
}
