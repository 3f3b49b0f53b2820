//! The streaming RDB parser.
//!
//! Reads Redis RDB files of versions 1–12 (`REDIS0001`–`REDIS0012`) and Valkey 9's
//! `VALKEY080`, from any [`std::io::Read`], without holding the file: every type and
//! encoding (strings raw/int/LZF; lists linked/ziplist/quicklist 1 and 2; sets
//! hashtable/intset/listpack; zsets skiplist (text or binary scores)/ziplist/listpack;
//! hashes hashtable/zipmap/ziplist/listpack and the field-TTL types of Redis 7.4 (22–25)
//! and Valkey 9 (22); streams with listpacks v1–v3, consumer groups, PEL and consumers;
//! module values (Tair's `exstrtype`, `tairhash-`, `tairzset_` decoded, others passed
//! through raw); functions; AUX, SELECTDB, RESIZEDB, SLOT_INFO, MODULE_AUX, IDLE, FREQ,
//! expiries, and the CRC64 trailer (verified when non-zero).
//!
//! # Protocol
//!
//! ```no_run
//! # use tandem::redis::rdb::*;
//! # fn f(file: std::fs::File) -> Result<(), RdbError> {
//! let mut p = RdbParser::new(std::io::BufReader::new(file))?;
//! while let Some(ev) = p.next_event()? {
//!     if let Event::Key(k) = ev {
//!         match p.read_raw(64 << 20)? {
//!             RawValue::Complete(raw) => {
//!                 let payload = dump_payload(&raw, p.version() as u16);
//!                 // RESTORE k.key ttl payload ABSTTL REPLACE
//!             }
//!             RawValue::TooLarge => {
//!                 let mut cmds = KeyCommands::new(&k, CommandOptions::default());
//!                 while let Some(batch) = cmds.next_batch(&mut p)? {
//!                     // send batch
//!                 }
//!             }
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! After [`Event::Key`] the caller chooses how to take the value, *before* reading it:
//! - [`RdbParser::read_raw`]`(limit)` walks the value structurally while capturing its
//!   bytes. If it fits in `limit` the raw bytes are returned (for a RESTORE payload via
//!   [`dump_payload`]). If not, the captured prefix is put back in front of the input
//!   (`RawValue::TooLarge`) and the value is still pending, so the caller decodes it
//!   with `next_chunk`. The cost of a big key is thus reading at most `limit` bytes
//!   twice, and memory stays at `limit` plus one chunk.
//! - [`RdbParser::next_chunk`] yields [`ValueChunk`]s of at most
//!   [`ChunkLimits::max_elements`] elements / about [`ChunkLimits::max_bytes`] bytes;
//!   elements stored one by one (hashtables, skiplists, quicklist nodes, stream nodes,
//!   Tair values) are read incrementally, so a 2M-member zset never sits in memory.
//!   [`KeyCommands`] turns the chunks into Redis commands.
//! - Neither: the next `next_event` skips the value.
//!
//! To have both raw bytes and commands for a small key, decode the raw bytes again with
//! [`RdbParser::for_value`].
//!
//! Errors are [`RdbError`]s carrying the byte offset and what was expected. Lengths read
//! from the input never size an allocation directly, and nothing panics on bad input.
//!
//! Bounded memory exceptions, by design: one listpack/ziplist/intset/zipmap blob (Redis
//! bounds these by its `*-max-listpack-*` configs), one LZF string, and the PEL of one
//! stream consumer group (owners are stored after the PEL).

mod arena;
mod blob;
pub(crate) mod crc64;
pub mod decode;
mod error;
pub mod inspect;
pub mod intset;
pub mod listpack;
mod lzf;
mod module;
mod parser;
mod reader;
mod stream;
mod tair;
mod types;
mod value;
pub mod ziplist;
pub mod zipmap;

pub use crc64::crc64;
pub use decode::{CommandOptions, KeyCommands, format_double};
pub use error::{RdbError, RdbErrorKind};
pub use inspect::{InspectFormat, inspect};
pub use lzf::decompress as lzf_decompress;
pub use module::module_name;
pub use parser::{
    MAX_REDIS_VERSION, ParseOptions, RdbParser, VALKEY_VERSION, dump_payload, parse_dump_payload,
};
pub use types::*;
pub use value::ChunkLimits;
