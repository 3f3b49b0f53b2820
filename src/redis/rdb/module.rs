//! Module values (RDB type 7, MODULE_2): a 64-bit module id naming the type, then
//! self-describing (opcode, value) pairs ending with opcode 0. Without the module we
//! can still skip them exactly, and decode the Tair types we know (see `tair.rs`).

use std::io::Read;

use super::error::{RdbError, Result};
use super::reader::Source;

pub(crate) const OP_EOF: u64 = 0;
pub(crate) const OP_SINT: u64 = 1;
pub(crate) const OP_UINT: u64 = 2;
pub(crate) const OP_FLOAT: u64 = 3;
pub(crate) const OP_DOUBLE: u64 = 4;
pub(crate) const OP_STRING: u64 = 5;

const CHARSET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The 9-character type name and the encoding version packed in a module id.
pub fn module_name(id: u64) -> (String, u32) {
    let name = (0..9)
        .map(|i| CHARSET[((id >> (58 - 6 * i)) & 63) as usize] as char)
        .collect();
    (name, (id & 1023) as u32)
}

/// Skip (opcode, value) pairs through the terminating opcode 0.
pub(crate) fn skip_opcodes<R: Read>(src: &mut Source<R>) -> Result<()> {
    loop {
        let at = src.offset();
        match src.len("module opcode")? {
            OP_EOF => return Ok(()),
            OP_SINT | OP_UINT => {
                src.len("module integer")?;
            }
            OP_FLOAT => src.skip(4, "module float")?,
            OP_DOUBLE => src.skip(8, "module double")?,
            OP_STRING => src.skip_string("module string")?,
            op => {
                return Err(RdbError::corrupt(
                    at,
                    "module opcode",
                    format!("unknown opcode {op}"),
                ));
            }
        }
    }
}

fn expect_op<R: Read>(src: &mut Source<R>, want: u64, what: &'static str) -> Result<()> {
    let at = src.offset();
    let op = src.len(what)?;
    if op != want {
        return Err(RdbError::corrupt(
            at,
            what,
            format!("module opcode {op}, expected {want}"),
        ));
    }
    Ok(())
}

pub(crate) fn read_uint<R: Read>(src: &mut Source<R>, what: &'static str) -> Result<u64> {
    expect_op(src, OP_UINT, what)?;
    src.len(what)
}

pub(crate) fn read_string<R: Read>(src: &mut Source<R>, what: &'static str) -> Result<Vec<u8>> {
    expect_op(src, OP_STRING, what)?;
    src.string(what)
}

pub(crate) fn read_double<R: Read>(src: &mut Source<R>, what: &'static str) -> Result<f64> {
    expect_op(src, OP_DOUBLE, what)?;
    src.f64_le(what)
}

pub(crate) fn read_eof<R: Read>(src: &mut Source<R>) -> Result<()> {
    expect_op(src, OP_EOF, "end of module value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tair_ids() {
        assert_eq!(module_name(0xb5a8ab85ab21f800), ("tairhash-".into(), 0));
        assert_eq!(module_name(0x7b1b2daedca97800), ("exstrtype".into(), 0));
        assert_eq!(module_name(0xb5a8abcec7adfc00), ("tairzset_".into(), 0));
    }
}
