//! The envelope around every payload: one format byte, then the message.
//!
//! | format byte | body |
//! | --- | --- |
//! | 1 | postcard encoding of [`Message`] |
//! | 2 | raw DEFLATE of the postcard encoding of [`Message`] |
//!
//! The encoder compresses bodies above [`COMPRESS_ABOVE_BYTES`], because a package inventory is
//! repetitive text that DEFLATE shrinks to about a third. Any other format byte is rejected with
//! its value; the decoder never guesses.

use crate::message::Message;

pub const FORMAT_POSTCARD: u8 = 1;
pub const FORMAT_POSTCARD_DEFLATE: u8 = 2;

/// Bodies up to this size are sent uncompressed: DEFLATE gains little on small deltas and
/// statuses, and plain postcard keeps them easy to inspect.
pub const COMPRESS_ABOVE_BYTES: usize = 512;

/// The largest decompressed body the decoder accepts, so a small compressed payload cannot expand
/// into an unbounded allocation.
pub const MAX_DECODED_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("failed to encode {kind} message: {source}")]
    Postcard {
        kind: &'static str,
        source: postcard::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty payload: expected a format byte")]
    Empty,
    #[error("unknown payload format {0}: this build reads formats 1 and 2")]
    UnknownFormat(u8),
    #[error("invalid compressed body: {0}")]
    Inflate(String),
    #[error("compressed body expands beyond {MAX_DECODED_BYTES} bytes")]
    TooLarge,
    #[error("invalid message body: {0}")]
    Postcard(#[from] postcard::Error),
}

/// Encodes a message into an envelope, compressing it when that pays.
pub fn encode(message: &Message) -> Result<Vec<u8>, EncodeError> {
    let body = postcard::to_allocvec(message).map_err(|source| EncodeError::Postcard {
        kind: message.kind(),
        source,
    })?;
    if body.len() > COMPRESS_ABOVE_BYTES {
        let compressed = miniz_oxide::deflate::compress_to_vec(&body, 6);
        if compressed.len() < body.len() {
            let mut out = Vec::with_capacity(compressed.len() + 1);
            out.push(FORMAT_POSTCARD_DEFLATE);
            out.extend_from_slice(&compressed);
            return Ok(out);
        }
    }
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(FORMAT_POSTCARD);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes an envelope, rejecting unknown formats, oversized bodies and trailing bytes.
pub fn decode(payload: &[u8]) -> Result<Message, DecodeError> {
    let (&format, body) = payload.split_first().ok_or(DecodeError::Empty)?;
    match format {
        FORMAT_POSTCARD => decode_body(body),
        FORMAT_POSTCARD_DEFLATE => {
            let inflated =
                miniz_oxide::inflate::decompress_to_vec_with_limit(body, MAX_DECODED_BYTES)
                    .map_err(|error| match error.status {
                        miniz_oxide::inflate::TINFLStatus::HasMoreOutput => DecodeError::TooLarge,
                        status => DecodeError::Inflate(format!("{status:?}")),
                    })?;
            decode_body(&inflated)
        }
        other => Err(DecodeError::UnknownFormat(other)),
    }
}

fn decode_body(body: &[u8]) -> Result<Message, DecodeError> {
    let (message, rest) = postcard::take_from_bytes::<Message>(body)?;
    if !rest.is_empty() {
        return Err(DecodeError::Postcard(
            postcard::Error::DeserializeBadEncoding,
        ));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AgentId, BootId, OrderId};
    use crate::message::{Order, OrderBody};
    use proptest::prelude::*;

    fn order(reason: String) -> Message {
        Message::Order(Order {
            order_id: OrderId([1; 16]),
            body: OrderBody::Resync { reason },
        })
    }

    #[test]
    fn small_message_is_plain_postcard() {
        let bytes = encode(&order("gap".into())).unwrap();
        assert_eq!(bytes[0], FORMAT_POSTCARD);
        assert_eq!(decode(&bytes).unwrap(), order("gap".into()));
    }

    #[test]
    fn large_message_is_compressed() {
        let message = order("x".repeat(4000));
        let bytes = encode(&message).unwrap();
        assert_eq!(bytes[0], FORMAT_POSTCARD_DEFLATE);
        assert!(bytes.len() < 200, "{} bytes", bytes.len());
        assert_eq!(decode(&bytes).unwrap(), message);
    }

    #[test]
    fn unknown_format_is_rejected_with_its_value() {
        let error = decode(&[9, 0, 0]).unwrap_err();
        assert!(matches!(error, DecodeError::UnknownFormat(9)));
        assert_eq!(
            error.to_string(),
            "unknown payload format 9: this build reads formats 1 and 2"
        );
    }

    #[test]
    fn unknown_message_kind_is_rejected() {
        // Variant index 200 does not exist.
        assert!(matches!(
            decode(&[FORMAT_POSTCARD, 200, 1]),
            Err(DecodeError::Postcard(_))
        ));
    }

    #[test]
    fn empty_and_trailing_bytes_are_rejected() {
        assert!(matches!(decode(&[]), Err(DecodeError::Empty)));
        let mut bytes = encode(&order("a".into())).unwrap();
        bytes.push(0);
        assert!(decode(&bytes).is_err());
    }

    #[test]
    fn compression_bomb_is_rejected() {
        let zeros = vec![0u8; MAX_DECODED_BYTES + 1024];
        let mut bytes = vec![FORMAT_POSTCARD_DEFLATE];
        bytes.extend(miniz_oxide::deflate::compress_to_vec(&zeros, 6));
        assert!(matches!(decode(&bytes), Err(DecodeError::TooLarge)));
    }

    #[test]
    fn status_round_trip() {
        let message = Message::Status(crate::message::Status {
            agent_id: AgentId::parse("a1").unwrap(),
            boot_id: BootId([2; 16]),
            state: crate::message::StatusState::Offline,
            agent_version: "0.1.0".into(),
            session_present: false,
            at_unix_s: 1_780_000_000,
        });
        assert_eq!(decode(&encode(&message).unwrap()).unwrap(), message);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn orders_round_trip(reason in ".{0,2000}") {
            let message = order(reason);
            prop_assert_eq!(decode(&encode(&message).unwrap()).unwrap(), message);
        }
    }
}
