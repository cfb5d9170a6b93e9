//! One request's full path, shared by UDP and TCP: the header is read, answers and runts are
//! dropped, hickory decodes the rest, the handler decides (and forwards), and the encoded
//! response comes back to the caller, which sends it its own way.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Header, MessageType, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable as _, BinDecoder, BinEncoder};
use hickory_server::net::NetError;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;

use crate::edge::server::{Answered, Handler};

/// The response to `packet` from `source` over `protocol`, with what answering it produced
/// (`None` for a FORMERR to an undecodable request); `None` for no response at all (under
/// twelve bytes, or itself a response: never answer answers, which would be reflection).
pub(crate) async fn respond(
    handler: &Handler,
    packet: Vec<u8>,
    source: SocketAddr,
    protocol: Protocol,
) -> Option<(Vec<u8>, Option<Answered>)> {
    let header = Header::read(&mut BinDecoder::new(&packet)).ok()?;
    if header.metadata.message_type == MessageType::Response {
        return None;
    }
    let request = match Request::from_bytes(packet, source, protocol) {
        Ok(request) => request,
        Err(error) => {
            tracing::debug!(%error, %source, "undecodable DNS request");
            return Some((error_response(&header, ResponseCode::FormErr), None));
        }
    };
    let capture = Capture::new(protocol);
    let answered = handler.answer(&request, capture.clone()).await;
    // Nothing captured: the response could not be encoded.
    let response = capture
        .take()
        .unwrap_or_else(|| error_response(&header, ResponseCode::ServFail));
    Some((response, Some(answered)))
}

/// A bare error response to `request` (FORMERR when its body did not decode, SERVFAIL when
/// the answer could not be encoded).
pub(crate) fn error_response(request: &Header, code: ResponseCode) -> Vec<u8> {
    let mut bytes = vec![0; 12];
    bytes[..2].copy_from_slice(&request.metadata.id.to_be_bytes());
    let opcode = u8::from(request.metadata.op_code);
    let rd = u8::from(request.metadata.recursion_desired);
    bytes[2] = 0x80 | (opcode << 3) | rd;
    bytes[3] = 0x80 | (u16::from(code) as u8 & 0x0f);
    bytes
}

/// A response handler that keeps the encoded response instead of sending it.
#[derive(Clone)]
struct Capture {
    protocol: Protocol,
    response: Arc<Mutex<Option<Vec<u8>>>>,
}

impl Capture {
    fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            response: Arc::default(),
        }
    }

    fn take(&self) -> Option<Vec<u8>> {
        self.response
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        // As hickory's own handlers: over UDP at most what the asker offered (512 without
        // EDNS), what does not fit cut and marked truncated; over TCP what a length prefix
        // can say.
        let limit = match self.protocol {
            Protocol::Udp => response.edns().map_or(512, |edns| edns.max_payload()),
            _ => u16::MAX,
        };
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(limit);
        let info = response.destructive_emit(&mut encoder)?;
        *self.response.lock().unwrap_or_else(|p| p.into_inner()) = Some(bytes);
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_error_echoes_id_opcode_and_rd() {
        let mut metadata = hickory_proto::op::Metadata::new(
            0x4242,
            MessageType::Query,
            hickory_proto::op::OpCode::Query,
        );
        metadata.recursion_desired = true;
        let header = Header {
            metadata,
            counts: hickory_proto::op::HeaderCounts::default(),
        };
        let bytes = error_response(&header, ResponseCode::FormErr);
        assert_eq!(bytes[..4], [0x42, 0x42, 0x81, 0x81]);
        assert!(bytes[4..].iter().all(|b| *b == 0));
    }
}
