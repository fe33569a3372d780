//! The framing shared by the trust file formats, and the canonical-encoding rule for signed
//! documents.
//!
//! A file is a 4-byte magic, a format byte and a body. The body is a sequence of postcard values
//! that the file's module reads one at a time, so that it can check each length and count against
//! its limit before it allocates. Byte strings and counts use postcard's own encoding (a LEB128
//! varint length, then the items), so a body reads the same as the postcard encoding of a struct
//! with those fields.

use serde::de::{DeserializeOwned, Deserializer, SeqAccess, Visitor};
use serde::Serialize;
use std::fmt;
use std::marker::PhantomData;

/// A file or document that is not in a format this build reads, or that exceeds a size limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("{what} is {actual} bytes, larger than the limit of {max} bytes")]
    TooLarge {
        what: &'static str,
        actual: u64,
        max: u64,
    },
    #[error("{what} has {count} {items}, more than the limit of {max}")]
    TooMany {
        what: &'static str,
        items: &'static str,
        count: u64,
        max: u64,
    },
    #[error("not a {what}: the input does not start with the magic {expected:?}")]
    BadMagic {
        what: &'static str,
        expected: &'static str,
    },
    #[error("unknown {what} format {found}: this build reads format {supported}")]
    UnknownFormat {
        what: &'static str,
        found: u8,
        supported: u8,
    },
    #[error("invalid {what}: the {part} is not a valid encoding ({source})")]
    Encoding {
        what: &'static str,
        part: &'static str,
        source: postcard::Error,
    },
    #[error("invalid {what}: the {part} is not valid UTF-8")]
    Utf8 {
        what: &'static str,
        part: &'static str,
    },
    #[error("invalid {what}: {count} unexpected bytes after the {part}")]
    TrailingBytes {
        what: &'static str,
        part: &'static str,
        count: usize,
    },
    #[error(
        "invalid {what}: the {part} is not in canonical postcard encoding, so its hash would be \
         ambiguous"
    )]
    NotCanonical {
        what: &'static str,
        part: &'static str,
    },
}

impl FormatError {
    /// Returns whether this error is a size or count limit, as opposed to malformed input.
    pub fn is_size_limit(&self) -> bool {
        matches!(self, Self::TooLarge { .. } | Self::TooMany { .. })
    }
}

/// The header of one file format.
pub(crate) struct Framing {
    /// Name of the file kind in messages, such as "bundle file".
    pub what: &'static str,
    pub magic: &'static [u8; 4],
    pub format: u8,
    pub max_bytes: usize,
}

impl Framing {
    /// Starts an encoded file with the magic and the format byte.
    pub fn start(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(self.magic);
        out.push(self.format);
        out
    }

    /// Checks an encoded file's size limit, as [`Framing::open`] will when it decodes the file.
    pub fn check_size(&self, encoded: &[u8]) -> Result<(), FormatError> {
        if encoded.len() > self.max_bytes {
            return Err(FormatError::TooLarge {
                what: self.what,
                actual: encoded.len() as u64,
                max: self.max_bytes as u64,
            });
        }
        Ok(())
    }

    /// Checks the size limit, the magic and the format byte, and returns a reader over the body.
    pub fn open<'a>(&self, input: &'a [u8]) -> Result<Reader<'a>, FormatError> {
        self.check_size(input)?;
        let expected = std::str::from_utf8(self.magic).unwrap_or("?");
        let Some(body) = input.strip_prefix(self.magic.as_slice()) else {
            return Err(FormatError::BadMagic {
                what: self.what,
                expected,
            });
        };
        let Some((&format, body)) = body.split_first() else {
            return Err(FormatError::Encoding {
                what: self.what,
                part: "format byte",
                source: postcard::Error::DeserializeUnexpectedEnd,
            });
        };
        if format != self.format {
            return Err(FormatError::UnknownFormat {
                what: self.what,
                found: format,
                supported: self.format,
            });
        }
        Ok(Reader {
            what: self.what,
            rest: body,
        })
    }
}

/// Reads the values of a file body in order.
pub(crate) struct Reader<'a> {
    what: &'static str,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads one postcard value.
    pub fn value<T: serde::Deserialize<'a>>(
        &mut self,
        part: &'static str,
    ) -> Result<T, FormatError> {
        let (value, rest) =
            postcard::take_from_bytes::<T>(self.rest).map_err(|source| FormatError::Encoding {
                what: self.what,
                part,
                source,
            })?;
        self.rest = rest;
        Ok(value)
    }

    /// Reads a count of items and checks it against `max` before any item is read.
    pub fn count(
        &mut self,
        part: &'static str,
        items: &'static str,
        max: usize,
    ) -> Result<usize, FormatError> {
        let count: u64 = self.value(part)?;
        if count > max as u64 {
            return Err(FormatError::TooMany {
                what: self.what,
                items,
                count,
                max: max as u64,
            });
        }
        Ok(count as usize)
    }

    /// Reads a length-prefixed byte string of at most `max` bytes.
    pub fn bytes(&mut self, part: &'static str, max: usize) -> Result<&'a [u8], FormatError> {
        let length: u64 = self.value(part)?;
        if length > max as u64 {
            return Err(FormatError::TooLarge {
                what: part,
                actual: length,
                max: max as u64,
            });
        }
        let length = length as usize;
        if length > self.rest.len() {
            return Err(FormatError::Encoding {
                what: self.what,
                part,
                source: postcard::Error::DeserializeUnexpectedEnd,
            });
        }
        let (bytes, rest) = self.rest.split_at(length);
        self.rest = rest;
        Ok(bytes)
    }

    /// Reads a length-prefixed UTF-8 string of at most `max` bytes.
    pub fn string(&mut self, part: &'static str, max: usize) -> Result<String, FormatError> {
        let bytes = self.bytes(part, max)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| FormatError::Utf8 {
            what: self.what,
            part,
        })
    }

    /// Checks that the whole body was read.
    pub fn finish(self, last_part: &'static str) -> Result<(), FormatError> {
        if !self.rest.is_empty() {
            return Err(FormatError::TrailingBytes {
                what: self.what,
                part: last_part,
                count: self.rest.len(),
            });
        }
        Ok(())
    }
}

/// Appends one postcard value to a file body.
pub(crate) fn write_value<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // postcard fails to encode into a Vec only for sequences and maps of unknown length, and
    // callers write only integers and signatures.
    let encoded = postcard::to_allocvec(value).expect("postcard encodes fixed-shape values");
    out.extend_from_slice(&encoded);
}

/// Appends a length-prefixed byte string, in the form [`Reader::bytes`] reads.
pub(crate) fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_value(out, &(bytes.len() as u64));
    out.extend_from_slice(bytes);
}

/// Encodes a signed document in postcard, the one form whose bytes are signed and hashed.
pub(crate) fn encode_document<T: Serialize>(
    what: &'static str,
    document: &T,
) -> Result<Vec<u8>, FormatError> {
    postcard::to_allocvec(document).map_err(|source| FormatError::Encoding {
        what,
        part: "document",
        source,
    })
}

/// Decodes a signed document and checks that it is in canonical form: nothing after it, and
/// re-encoding it gives the same bytes. Postcard itself accepts over-long varints and unsorted map
/// entries, which would let one document have several byte forms and so several hashes.
pub(crate) fn decode_document<T: Serialize + DeserializeOwned>(
    what: &'static str,
    part: &'static str,
    bytes: &[u8],
) -> Result<T, FormatError> {
    let (document, rest) = postcard::take_from_bytes::<T>(bytes)
        .map_err(|source| FormatError::Encoding { what, part, source })?;
    if !rest.is_empty() {
        return Err(FormatError::TrailingBytes {
            what,
            part,
            count: rest.len(),
        });
    }
    let canonical = encode_document(what, &document)?;
    if canonical != bytes {
        return Err(FormatError::NotCanonical { what, part });
    }
    Ok(document)
}

/// Deserializes a sequence of at most `max` items. Used for the lists inside a document whose
/// items take much more memory than encoded bytes, so a small document cannot claim a large
/// allocation.
pub(crate) fn deserialize_bounded_vec<'de, D, T>(
    deserializer: D,
    max: usize,
) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct BoundedVisitor<T> {
        max: usize,
        item: PhantomData<T>,
    }

    impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for BoundedVisitor<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a sequence of at most {} items", self.max)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let capacity = seq.size_hint().unwrap_or(0).min(self.max).min(64);
            let mut items = Vec::with_capacity(capacity);
            while let Some(item) = seq.next_element()? {
                if items.len() == self.max {
                    return Err(serde::de::Error::invalid_length(self.max + 1, &self));
                }
                items.push(item);
            }
            Ok(items)
        }
    }

    deserializer.deserialize_seq(BoundedVisitor {
        max,
        item: PhantomData,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_FRAMING: Framing = Framing {
        what: "test file",
        magic: b"TGTS",
        format: 1,
        max_bytes: 32,
    };

    #[test]
    fn framing_rejects_wrong_magic_format_and_size() {
        assert!(matches!(
            TEST_FRAMING.open(b"XXXX\x01"),
            Err(FormatError::BadMagic { .. })
        ));
        assert!(matches!(
            TEST_FRAMING.open(b"TGTS\x02"),
            Err(FormatError::UnknownFormat { found: 2, .. })
        ));
        assert!(matches!(
            TEST_FRAMING.open(b"TGTS"),
            Err(FormatError::Encoding { .. })
        ));
        let error = TEST_FRAMING.open(&[0u8; 33]).err().unwrap();
        assert!(error.is_size_limit());
    }

    #[test]
    fn reader_checks_lengths_before_reading() {
        let mut body = TEST_FRAMING.start();
        write_value(&mut body, &(1_000_000u64));
        let mut reader = TEST_FRAMING.open(&body).unwrap();
        assert!(matches!(
            reader.bytes("blob", 16),
            Err(FormatError::TooLarge {
                actual: 1_000_000,
                ..
            })
        ));

        let mut body = TEST_FRAMING.start();
        write_value(&mut body, &(10u64));
        body.extend_from_slice(b"short");
        let mut reader = TEST_FRAMING.open(&body).unwrap();
        assert!(matches!(
            reader.bytes("blob", 16),
            Err(FormatError::Encoding { .. })
        ));
    }

    #[test]
    fn reader_rejects_trailing_bytes() {
        let mut body = TEST_FRAMING.start();
        write_bytes(&mut body, b"abc");
        body.push(7);
        let mut reader = TEST_FRAMING.open(&body).unwrap();
        assert_eq!(reader.bytes("blob", 16).unwrap(), b"abc");
        assert!(matches!(
            reader.finish("blob"),
            Err(FormatError::TrailingBytes { count: 1, .. })
        ));
    }

    #[test]
    fn over_long_varint_is_not_canonical() {
        // 5 encoded as two varint bytes instead of one.
        let error = decode_document::<u32>("test document", "document", &[0x85, 0x00]);
        assert!(matches!(error, Err(FormatError::NotCanonical { .. })));
        assert_eq!(
            decode_document::<u32>("test document", "document", &[0x05]),
            Ok(5)
        );
    }
}
