//! JIT linking (`cuLinkCreate` .. `cuLinkComplete`). The shim gathers a link's inputs and sends
//! them in one blob (the control socket's `AttachBlob`, as module images travel); the daemon
//! runs the driver's linker and keeps the linked image until the shim has read it back in
//! reply-sized pieces and dropped it.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `LinkComplete`: links the inputs of blob `blob` (a [`LinkRequest`]) for `device`.
/// Answered with values `[link id (0 on failure), CUresult of the link, image size, info log
/// length]` and the payload `wall time (f32, little-endian) ++ info log ++ error log`; the
/// reply's own result is success whenever the request itself was well formed.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct LinkComplete {
    pub device: u32,
    pub _pad: u32,
    pub blob: u64,
}

/// `LinkRead`: answered with up to a reply payload's worth of the linked image from `offset`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct LinkRead {
    pub link: u64,
    pub offset: u64,
}

/// Most options one option list may carry (the driver knows fewer than 40).
pub const LINK_MAX_OPTIONS: usize = 64;
/// Most inputs one link may combine.
pub const LINK_MAX_INPUTS: usize = 256;
/// Longest input name (it only appears in the linker's messages).
pub const LINK_MAX_NAME: usize = 4096;
/// Most linked images one session may hold before reading them back.
pub const LINK_MAX_PENDING: usize = 16;

/// `CUjit_option` values whose value is a plain integer and which the daemon forwards to the
/// driver. Buffer options (logs) and the wall time are answered through the reply instead;
/// options whose value points into the client (symbol tables, name lists) are refused.
pub fn link_option_forwarded(opt: u32) -> bool {
    matches!(opt, 0 | 1 | 7..=16 | 20..=24 | 29..=34)
}

/// `CUjitInputType` values the linker accepts through Baton (cubin, PTX, fatbin, object,
/// library; NVVM IR needs libNVVM options that are not forwarded).
pub const LINK_MAX_INPUT_TYPE: u32 = 4;

/// One input of a link.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkInput {
    /// `CUjitInputType`.
    pub kind: u32,
    /// Name for the linker's messages (no NUL).
    pub name: Vec<u8>,
    /// Per-input scalar options: (`CUjit_option`, value).
    pub options: Vec<(u32, u64)>,
    pub data: Vec<u8>,
}

/// Everything a link needs: the link's own scalar options and its inputs, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkRequest {
    pub options: Vec<(u32, u64)>,
    pub inputs: Vec<LinkInput>,
}

/// Why a link request was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkDecodeError {
    #[error("link request is truncated or has trailing bytes")]
    Malformed,
    #[error("link request exceeds a limit")]
    TooLarge,
    #[error("JIT option {0} is not accepted")]
    Option(u32),
    #[error("JIT input type {0} is not accepted")]
    InputType(u32),
}

fn put_options(out: &mut Vec<u8>, options: &[(u32, u64)]) {
    out.extend_from_slice(&(options.len() as u32).to_le_bytes());
    for &(o, v) in options {
        out.extend_from_slice(&o.to_le_bytes());
        out.extend_from_slice(&v.to_le_bytes());
    }
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LinkDecodeError> {
        if self.0.len() < n {
            return Err(LinkDecodeError::Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u32(&mut self) -> Result<u32, LinkDecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, LinkDecodeError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn options(&mut self) -> Result<Vec<(u32, u64)>, LinkDecodeError> {
        let n = self.u32()? as usize;
        if n > LINK_MAX_OPTIONS {
            return Err(LinkDecodeError::TooLarge);
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let (o, val) = (self.u32()?, self.u64()?);
            if !link_option_forwarded(o) {
                return Err(LinkDecodeError::Option(o));
            }
            // Every forwarded option is an `int`, `unsigned int` or enum.
            if val > u32::MAX as u64 {
                return Err(LinkDecodeError::Option(o));
            }
            v.push((o, val));
        }
        Ok(v)
    }
}

impl LinkRequest {
    /// Layout: options, `u32` input count, then per input: `u32` kind, options, `u32` name
    /// length, name, `u64` data length, data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_options(&mut out, &self.options);
        out.extend_from_slice(&(self.inputs.len() as u32).to_le_bytes());
        for i in &self.inputs {
            out.extend_from_slice(&i.kind.to_le_bytes());
            put_options(&mut out, &i.options);
            out.extend_from_slice(&(i.name.len() as u32).to_le_bytes());
            out.extend_from_slice(&i.name);
            out.extend_from_slice(&(i.data.len() as u64).to_le_bytes());
            out.extend_from_slice(&i.data);
        }
        out
    }

    /// Decodes and validates untrusted bytes: limits, option codes, input types, no NUL in
    /// names, and no trailing bytes.
    pub fn decode(b: &[u8]) -> Result<LinkRequest, LinkDecodeError> {
        let mut c = Cursor(b);
        let options = c.options()?;
        let n = c.u32()? as usize;
        if n > LINK_MAX_INPUTS {
            return Err(LinkDecodeError::TooLarge);
        }
        let mut inputs = Vec::with_capacity(n);
        for _ in 0..n {
            let kind = c.u32()?;
            if kind > LINK_MAX_INPUT_TYPE {
                return Err(LinkDecodeError::InputType(kind));
            }
            let options = c.options()?;
            let name_len = c.u32()? as usize;
            if name_len > LINK_MAX_NAME {
                return Err(LinkDecodeError::TooLarge);
            }
            let name = c.take(name_len)?.to_vec();
            if name.contains(&0) {
                return Err(LinkDecodeError::Malformed);
            }
            let len = usize::try_from(c.u64()?).map_err(|_| LinkDecodeError::Malformed)?;
            let data = c.take(len)?.to_vec();
            inputs.push(LinkInput {
                kind,
                name,
                options,
                data,
            });
        }
        if !c.0.is_empty() {
            return Err(LinkDecodeError::Malformed);
        }
        Ok(LinkRequest { options, inputs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LinkRequest {
        LinkRequest {
            options: vec![(12, 1), (7, 3)],
            inputs: vec![
                LinkInput {
                    kind: 1,
                    name: b"a.ptx".to_vec(),
                    options: vec![(0, 32)],
                    data: b"ptx text\0".to_vec(),
                },
                LinkInput {
                    kind: 0,
                    name: Vec::new(),
                    options: Vec::new(),
                    data: vec![0x7f, b'E', b'L', b'F'],
                },
            ],
        }
    }

    #[test]
    fn link_request_round_trips() {
        let r = sample();
        assert_eq!(LinkRequest::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn link_request_rejects_bad_input() {
        let b = sample().encode();
        for cut in 0..b.len() {
            assert!(LinkRequest::decode(&b[..cut]).is_err(), "prefix {cut}");
        }
        let mut long = b.clone();
        long.push(0);
        assert_eq!(
            LinkRequest::decode(&long).unwrap_err(),
            LinkDecodeError::Malformed
        );
        // Pointer-valued options (here CU_JIT_GLOBAL_SYMBOL_NAMES) and log buffers never travel.
        for opt in [3, 5, 17, 18, 25] {
            let mut r = sample();
            r.options.push((opt, 0));
            assert_eq!(
                LinkRequest::decode(&r.encode()).unwrap_err(),
                LinkDecodeError::Option(opt)
            );
        }
        let mut r = sample();
        r.inputs[0].kind = 5;
        assert_eq!(
            LinkRequest::decode(&r.encode()).unwrap_err(),
            LinkDecodeError::InputType(5)
        );
        let mut r = sample();
        r.options.push((0, 1 << 40));
        assert!(LinkRequest::decode(&r.encode()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = LinkRequest::decode(&bytes);
        }
    }
}
