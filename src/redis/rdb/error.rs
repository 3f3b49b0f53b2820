//! The one error type of the RDB layer: what went wrong, and at which byte of the input.

use std::fmt;

/// What went wrong. Every variant is reported together with the byte offset in the RDB
/// stream where the problem starts (see [`RdbError::offset`]).
#[derive(Debug)]
pub enum RdbErrorKind {
    /// The underlying reader failed.
    Io(std::io::Error),
    /// The input ended while `expected` was being read.
    UnexpectedEof { expected: &'static str },
    /// The bytes do not form a valid `expected`; `detail` says how.
    Corrupt {
        expected: &'static str,
        detail: String,
    },
    /// Not an RDB file (neither `REDIS` nor `VALKEY` magic).
    BadMagic,
    /// An RDB version this parser does not know (a newer server wrote it).
    UnsupportedVersion { magic: &'static str, version: u32 },
    /// A value type or opcode byte this parser does not know.
    UnknownType(u8),
    /// The trailing CRC64 does not match the data.
    ChecksumMismatch { stored: u64, computed: u64 },
    /// A length exceeds a configured cap (a forged or corrupt length, or a value larger
    /// than the caller allows).
    TooLarge {
        what: &'static str,
        len: u64,
        limit: u64,
    },
    /// The API was used out of order (e.g. `read_raw` without a pending key).
    Usage(&'static str),
    /// Internal: the raw capture passed its limit. Never escapes the parser.
    #[doc(hidden)]
    RawLimit,
}

/// An RDB parse error with the byte offset (from the start of the file, or of the
/// value for values decoded from a raw payload) where it was found.
#[derive(Debug)]
pub struct RdbError {
    pub kind: RdbErrorKind,
    pub offset: u64,
}

pub type Result<T> = std::result::Result<T, RdbError>;

impl RdbError {
    pub fn new(kind: RdbErrorKind, offset: u64) -> Self {
        RdbError { kind, offset }
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub(crate) fn corrupt(offset: u64, expected: &'static str, detail: impl Into<String>) -> Self {
        RdbError::new(
            RdbErrorKind::Corrupt {
                expected,
                detail: detail.into(),
            },
            offset,
        )
    }

    pub(crate) fn eof(offset: u64, expected: &'static str) -> Self {
        RdbError::new(RdbErrorKind::UnexpectedEof { expected }, offset)
    }
}

impl fmt::Display for RdbErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RdbErrorKind::Io(e) => write!(f, "read error: {e}"),
            RdbErrorKind::UnexpectedEof { expected } => {
                write!(f, "unexpected end of input, expected {expected}")
            }
            RdbErrorKind::Corrupt { expected, detail } => {
                write!(f, "invalid {expected}: {detail}")
            }
            RdbErrorKind::BadMagic => write!(f, "not an RDB file: expected REDIS or VALKEY magic"),
            RdbErrorKind::UnsupportedVersion { magic, version } => {
                write!(f, "unsupported RDB version {version} (magic {magic})")
            }
            RdbErrorKind::UnknownType(t) => {
                write!(
                    f,
                    "unknown value type or opcode {t}, expected a known RDB type"
                )
            }
            RdbErrorKind::ChecksumMismatch { stored, computed } => write!(
                f,
                "CRC64 mismatch: file says {stored:#018x}, data gives {computed:#018x}"
            ),
            RdbErrorKind::TooLarge { what, len, limit } => {
                write!(f, "{what} of {len} bytes exceeds the limit of {limit}")
            }
            RdbErrorKind::Usage(m) => write!(f, "API misuse: {m}"),
            RdbErrorKind::RawLimit => write!(f, "raw capture limit reached"),
        }
    }
}

impl fmt::Display for RdbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RDB error at byte {}: {}", self.offset, self.kind)
    }
}

impl std::error::Error for RdbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            RdbErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}
