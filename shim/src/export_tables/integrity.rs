//! INTEGRITY_CHECK (`d4082055…`, 3 slots). The runtime calls slot 1 with a version number and
//! the time, and compares the 16 bytes it gets back with what it computes itself from what it
//! knows: an HMAC-MD2 (RFC 2104 over RFC 1319), under a fixed key, of
//!
//! | bytes | what |
//! | --- | --- |
//! | 4 | driver version (`cuDriverGetVersion`) |
//! | 4 | the version argument |
//! | 4 | process id |
//! | 4 | `pthread_self()` of the calling thread, truncated to 32 bits |
//! | 8 | address of the CUDART_INTERFACE table |
//! | 8 | address of this table |
//! | 8 | slot 1 of this table (this function's address as the caller sees it) |
//! | 8 | the time argument |
//! | 28 per device | `cuDeviceGetUuid`, then PCI domain, bus and device ids (`i32`s) |
//!
//! all little-endian, devices in ordinal order. A version ending in 0 or 1 gets a constant
//! instead. Checked against the 580 driver on an H100 (the tests below hold its answers), so
//! the only requirement on Baton is to hash what its own entry points report, which the
//! runtime reads through them too.

use super::{stubs, Table};
use cuda_abi::{CUdevice_attribute, CUresult, CUuuid};
use std::ffi::{c_int, c_uint, c_void};

const ID: usize = 5;

pub(super) static TABLE: Table<1> = Table::new(stubs!(ID; 0))
    .sized(3)
    .with(1, check as *const c_void)
    .with(2, enable as *const c_void);

/// The HMAC key (16 bytes, MD2's block size).
const KEY: [u8; 16] = [
    0x14, 0x6a, 0xdd, 0xae, 0x53, 0xa9, 0xa7, 0x52, 0xaa, 0x08, 0x41, 0x36, 0x0b, 0xf5, 0x5a, 0x9f,
];

/// The answers for versions ending in 0 and in 1.
const FIXED: [[u64; 2]; 2] = [
    [0x3341_181c_03cb_675c, 0x8ed3_83aa_1f4c_d1e8],
    [0x1841_181c_03cb_675c, 0x8ed3_83aa_1f4c_d1e8],
];

/// Slot 1 `(version, unix_seconds, result_out)`.
unsafe extern "C" fn check(version: c_uint, unix_seconds: u64, result: *mut [u64; 2]) -> CUresult {
    crate::entry::guard("INTEGRITY_CHECK[1]", || {
        if result.is_null() {
            return CUresult::CUDA_ERROR_INVALID_VALUE;
        }
        let answer = if version % 10 < 2 {
            FIXED[(version % 10) as usize]
        } else {
            let devices = match devices() {
                Ok(d) => d,
                Err(e) => return e,
            };
            let mut driver = 0;
            // SAFETY: out-pointer to a local.
            unsafe { crate::api::cuDriverGetVersion(&mut driver) };
            // SAFETY: plain libc call.
            let thread = unsafe { libc::pthread_self() } as u32;
            let inputs = Inputs {
                driver_version: driver as u32,
                version,
                process: std::process::id(),
                thread,
                cudart_table: super::cudart_interface::TABLE.start() as u64,
                integrity_table: TABLE.start() as u64,
                function: TABLE.word(1) as u64,
                unix_seconds,
            };
            digest(&inputs, &devices)
        };
        // SAFETY: non-null out-pointer from the caller.
        unsafe { result.write(answer) };
        CUresult::CUDA_SUCCESS
    })
}

/// Slot 2 `(flag)`: succeeds (the driver's takes a flag; its effect is unknown).
extern "C" fn enable(_flag: c_int) -> CUresult {
    CUresult::CUDA_SUCCESS
}

/// The fixed part of the hashed message.
struct Inputs {
    driver_version: u32,
    version: u32,
    process: u32,
    thread: u32,
    cudart_table: u64,
    integrity_table: u64,
    function: u64,
    unix_seconds: u64,
}

/// What is hashed of one device.
struct Device {
    uuid: [u8; 16],
    pci: [i32; 3],
}

/// Every device as the shim's entry points describe it.
fn devices() -> Result<Vec<Device>, CUresult> {
    let mut n = 0;
    // SAFETY: out-pointer to a local.
    let r = unsafe { crate::api::cuDeviceGetCount(&mut n) };
    if r != CUresult::CUDA_SUCCESS {
        return Err(r);
    }
    (0..n)
        .map(|d| {
            let mut uuid = CUuuid { bytes: [0; 16] };
            // SAFETY: out-pointer to a local.
            let r = unsafe { crate::api::cuDeviceGetUuid(&mut uuid, d) };
            if r != CUresult::CUDA_SUCCESS {
                return Err(r);
            }
            let attribute = |a: CUdevice_attribute| {
                let mut v = 0;
                // SAFETY: out-pointer to a local. A failure hashes 0, as the value stays.
                unsafe { crate::api::cuDeviceGetAttribute(&mut v, a, d) };
                v
            };
            Ok(Device {
                uuid: uuid.bytes.map(|b| b as u8),
                pci: [
                    attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID),
                    attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID),
                    attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID),
                ],
            })
        })
        .collect()
}

/// The 16 bytes of HMAC-MD2 of the message, read as two native-endian words.
fn digest(inputs: &Inputs, devices: &[Device]) -> [u64; 2] {
    let mut message = Vec::with_capacity(48 + 28 * devices.len());
    for word in [
        inputs.driver_version,
        inputs.version,
        inputs.process,
        inputs.thread,
    ] {
        message.extend_from_slice(&word.to_le_bytes());
    }
    for word in [
        inputs.cudart_table,
        inputs.integrity_table,
        inputs.function,
        inputs.unix_seconds,
    ] {
        message.extend_from_slice(&word.to_le_bytes());
    }
    for d in devices {
        message.extend_from_slice(&d.uuid);
        for v in d.pci {
            message.extend_from_slice(&v.to_le_bytes());
        }
    }
    let mac = hmac_md2(&KEY, &message);
    let (lo, hi) = mac.split_at(8);
    [
        u64::from_ne_bytes(lo.try_into().unwrap_or_default()),
        u64::from_ne_bytes(hi.try_into().unwrap_or_default()),
    ]
}

/// HMAC (RFC 2104) with MD2, whose block is 16 bytes: `key` is used as it is.
fn hmac_md2(key: &[u8; 16], message: &[u8]) -> [u8; 16] {
    let pad = |byte: u8| key.map(|k| k ^ byte);
    let mut inner = Md2::new();
    inner.update(&pad(0x36));
    inner.update(message);
    let mut outer = Md2::new();
    outer.update(&pad(0x5c));
    outer.update(&inner.finish());
    outer.finish()
}

/// MD2 (RFC 1319): the permutation of 0..=255 built from the digits of pi.
const PI_SUBST: [u8; 256] = [
    41, 46, 67, 201, 162, 216, 124, 1, 61, 54, 84, 161, 236, 240, 6, 19, //
    98, 167, 5, 243, 192, 199, 115, 140, 152, 147, 43, 217, 188, 76, 130, 202, //
    30, 155, 87, 60, 253, 212, 224, 22, 103, 66, 111, 24, 138, 23, 229, 18, //
    190, 78, 196, 214, 218, 158, 222, 73, 160, 251, 245, 142, 187, 47, 238, 122, //
    169, 104, 121, 145, 21, 178, 7, 63, 148, 194, 16, 137, 11, 34, 95, 33, //
    128, 127, 93, 154, 90, 144, 50, 39, 53, 62, 204, 231, 191, 247, 151, 3, //
    255, 25, 48, 179, 72, 165, 181, 209, 215, 94, 146, 42, 172, 86, 170, 198, //
    79, 184, 56, 210, 150, 164, 125, 182, 118, 252, 107, 226, 156, 116, 4, 241, //
    69, 157, 112, 89, 100, 113, 135, 32, 134, 91, 207, 101, 230, 45, 168, 2, //
    27, 96, 37, 173, 174, 176, 185, 246, 28, 70, 97, 105, 52, 64, 126, 15, //
    85, 71, 163, 35, 221, 81, 175, 58, 195, 92, 249, 206, 186, 197, 234, 38, //
    44, 83, 13, 110, 133, 40, 132, 9, 211, 223, 205, 244, 65, 129, 77, 82, //
    106, 220, 55, 200, 108, 193, 171, 250, 36, 225, 123, 8, 12, 189, 177, 74, //
    120, 136, 149, 139, 227, 99, 232, 109, 233, 203, 213, 254, 59, 0, 29, 57, //
    242, 239, 183, 14, 102, 88, 208, 228, 166, 119, 114, 248, 235, 117, 75, 10, //
    49, 68, 80, 180, 143, 237, 31, 26, 219, 153, 141, 51, 159, 17, 131, 20, //
];

/// An MD2 computation in progress.
struct Md2 {
    /// The 48-byte state: the digest so far, the block, and their exclusive or.
    state: [u8; 48],
    checksum: [u8; 16],
    block: [u8; 16],
    filled: usize,
}

impl Md2 {
    fn new() -> Self {
        Md2 {
            state: [0; 48],
            checksum: [0; 16],
            block: [0; 16],
            filled: 0,
        }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let n = (16 - self.filled).min(bytes.len());
            self.block[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == 16 {
                let block = self.block;
                self.compress(&block);
                self.filled = 0;
            }
        }
    }

    /// Folds one block into the checksum and the state.
    fn compress(&mut self, block: &[u8; 16]) {
        let mut last = self.checksum[15];
        for (c, &b) in self.checksum.iter_mut().zip(block) {
            *c ^= PI_SUBST[(b ^ last) as usize];
            last = *c;
        }
        self.transform(block);
    }

    /// The 18 rounds over the state, without the checksum (which the final block is).
    fn transform(&mut self, block: &[u8; 16]) {
        for (i, &b) in block.iter().enumerate() {
            self.state[16 + i] = b;
            self.state[32 + i] = self.state[i] ^ b;
        }
        let mut t = 0u8;
        for round in 0..18u8 {
            for s in self.state.iter_mut() {
                *s ^= PI_SUBST[t as usize];
                t = *s;
            }
            t = t.wrapping_add(round);
        }
    }

    fn finish(mut self) -> [u8; 16] {
        let pad = (16 - self.filled) as u8;
        self.update(&vec![pad; pad as usize]);
        let checksum = self.checksum;
        self.transform(&checksum);
        let mut out = [0; 16];
        out.copy_from_slice(&self.state[..16]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn md2(m: &[u8]) -> String {
        let mut h = Md2::new();
        h.update(m);
        hex(&h.finish())
    }

    #[test]
    fn md2_matches_rfc_1319() {
        assert_eq!(md2(b""), "8350e5a3e24c153df2275c9f80692773");
        assert_eq!(md2(b"a"), "32ec01ec4a6dac72c0ab96fb34c0b5d1");
        assert_eq!(md2(b"abc"), "da853b0d3f88d99b30283a69e6ded6bb");
        assert_eq!(md2(b"message digest"), "ab4f496bfb2a530b219ff33031fe06b0");
        assert_eq!(
            md2(b"abcdefghijklmnopqrstuvwxyz"),
            "4e8ddff3650292ab5a4108c3aa47940b"
        );
        // Input fed in pieces straddling blocks.
        let mut h = Md2::new();
        for piece in [&b"abcdefghij"[..], b"klmnopqrstu", b"vwxyz"] {
            h.update(piece);
        }
        assert_eq!(hex(&h.finish()), "4e8ddff3650292ab5a4108c3aa47940b");
    }

    /// Answers of the 580.159 driver's own slot 1 on an H100 (docs/export-tables.md), with
    /// the inputs it hashed.
    #[test]
    fn digest_matches_the_driver() {
        let inputs = |version| Inputs {
            driver_version: 13000,
            version,
            process: 400,
            thread: 0x7f81_f3d6_0740_u64 as u32,
            cudart_table: 0x7f81_f384_c680,
            integrity_table: 0x7f81_f384_c660,
            function: 0x7f81_ee1a_b350,
            unix_seconds: 1_795_359_042,
        };
        let device = Device {
            uuid: [
                0x50, 0x40, 0x98, 0x09, 0x16, 0xdd, 0x87, 0x64, 0xd3, 0x98, 0xf9, 0xf8, 0x8c, 0xc1,
                0xf7, 0x78,
            ],
            pci: [0, 0, 6],
        };
        for (version, want) in [
            (2, [0x3c70_acb3_16da_aae3, 0xaaec_bd9a_ca6a_34ed]),
            (3, [0xef11_f8b5_bd18_d7c1, 0x7993_214d_8209_7ae1]),
            (12, [0x46c5_8cbf_9d1d_968b, 0xaddd_fc1e_dfdb_0b65]),
            (13002, [0x0b65_71fe_648d_4192, 0x2157_c817_761e_fb4c]),
        ] {
            assert_eq!(
                digest(&inputs(version), std::slice::from_ref(&device)),
                want
            );
        }
    }
}
