//! A gRPC codec whose responses are protobuf messages encoded ahead of time.
//!
//! The index encodes each service update once; with this codec every subscriber's
//! stream copies those bytes into its frame instead of re-encoding the message (the
//! generated server would encode it again per subscriber). Requests are decoded with
//! prost as usual.

use std::marker::PhantomData;

use bytes::{BufMut, Bytes};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Encodes `Bytes` holding an already encoded message; decodes `D` with prost.
#[derive(Debug)]
pub struct PreEncodedCodec<D>(PhantomData<fn() -> D>);

impl<D> Default for PreEncodedCodec<D> {
    fn default() -> Self {
        PreEncodedCodec(PhantomData)
    }
}

impl<D: prost::Message + Default + Send + 'static> Codec for PreEncodedCodec<D> {
    type Encode = Bytes;
    type Decode = D;
    type Encoder = PreEncodedEncoder;
    type Decoder = ProstDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder(PhantomData)
    }
}

#[derive(Debug)]
pub struct PreEncodedEncoder;

impl Encoder for PreEncodedEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

#[derive(Debug)]
pub struct ProstDecoder<D>(PhantomData<fn() -> D>);

impl<D: prost::Message + Default> Decoder for ProstDecoder<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        D::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed request: {e}")))
    }
}
