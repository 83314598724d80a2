//! Finding the length of a module image the driver API passes by pointer alone.
//!
//! `cuModuleLoadData` and friends take `const void*` with no size: the driver recognises the
//! format and reads what it needs. The shim must copy the image to the daemon, so it does the
//! same: an ELF cubin's size follows from its headers, a fatbin's from its header, a fatbin
//! wrapper points to a fatbin, and anything else is NUL-terminated PTX text.

const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const FATBIN_MAGIC: u32 = 0xBA55_ED50;
const WRAPPER_MAGIC: u32 = 0x4662_43B1;

/// Reads a little-endian integer at `p + off`.
///
/// # Safety
/// `p + off .. p + off + N` must be readable.
unsafe fn read<const N: usize>(p: *const u8, off: usize) -> [u8; N] {
    // SAFETY: per the contract.
    unsafe { (p.add(off) as *const [u8; N]).read_unaligned() }
}

/// The image's length in bytes, or `None` for a format that cannot be sized.
///
/// # Safety
/// `p` must point to a complete image in one of the formats above (as the driver requires).
pub(crate) unsafe fn image_len(p: *const u8) -> Option<usize> {
    if p.is_null() {
        return None;
    }
    // SAFETY: every valid image is at least 4 bytes (PTX text is at least its NUL).
    let head4 = unsafe { read::<4>(p, 0) };
    if head4 == ELF_MAGIC {
        // SAFETY: an ELF image has a full 64-byte header.
        return unsafe { elf_len(p) };
    }
    match u32::from_le_bytes(head4) {
        FATBIN_MAGIC => {
            // SAFETY: a fatbin header is 16 bytes: magic, version, header size, body size.
            let (header, body) = unsafe { (read::<2>(p, 6), read::<8>(p, 8)) };
            let (header, body) = (
                u16::from_le_bytes(header) as usize,
                u64::from_le_bytes(body) as usize,
            );
            header.checked_add(body)
        }
        WRAPPER_MAGIC => {
            // SAFETY: the wrapper is {int magic; int version; const void* data; void* filename}.
            let data = usize::from_le_bytes(unsafe { read::<8>(p, 8) }) as *const u8;
            // SAFETY: the wrapper's data pointer is a fatbin.
            unsafe { image_len(data) }
        }
        // SAFETY: text images are NUL-terminated; include the NUL.
        _ => Some(
            unsafe { std::ffi::CStr::from_ptr(p as *const std::ffi::c_char) }
                .to_bytes()
                .len()
                + 1,
        ),
    }
}

/// The fatbin a wrapper points to, or `p` itself when it is not a wrapper.
///
/// # Safety
/// As for [`image_len`].
pub(crate) unsafe fn unwrap(p: *const u8) -> *const u8 {
    // SAFETY: per the contract (at least 4 bytes), and 16 for a wrapper.
    unsafe {
        if u32::from_le_bytes(read::<4>(p, 0)) == WRAPPER_MAGIC {
            usize::from_le_bytes(read::<8>(p, 8)) as *const u8
        } else {
            p
        }
    }
}

/// # Safety
/// `p` must point to a complete 64-bit ELF file.
unsafe fn elf_len(p: *const u8) -> Option<usize> {
    // SAFETY: offsets within the 64-byte ELF64 header.
    let (phoff, shoff, phentsize, phnum, shentsize, shnum) = unsafe {
        (
            u64::from_le_bytes(read::<8>(p, 0x20)) as usize,
            u64::from_le_bytes(read::<8>(p, 0x28)) as usize,
            u16::from_le_bytes(read::<2>(p, 0x36)) as usize,
            u16::from_le_bytes(read::<2>(p, 0x38)) as usize,
            u16::from_le_bytes(read::<2>(p, 0x3A)) as usize,
            u16::from_le_bytes(read::<2>(p, 0x3C)) as usize,
        )
    };
    let mut end = 64usize;
    end = end.max(phoff.checked_add(phentsize.checked_mul(phnum)?)?);
    end = end.max(shoff.checked_add(shentsize.checked_mul(shnum)?)?);
    for i in 0..shnum {
        let sh = shoff + i * shentsize;
        // SAFETY: section headers lie inside the file (the ELF is complete).
        let (ty, off, size) = unsafe {
            (
                u32::from_le_bytes(read::<4>(p, sh + 4)),
                u64::from_le_bytes(read::<8>(p, sh + 0x18)) as usize,
                u64::from_le_bytes(read::<8>(p, sh + 0x20)) as usize,
            )
        };
        const SHT_NOBITS: u32 = 8;
        if ty != SHT_NOBITS {
            end = end.max(off.checked_add(size)?);
        }
    }
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        // SAFETY: program headers lie inside the file.
        let (off, filesz) = unsafe {
            (
                u64::from_le_bytes(read::<8>(p, ph + 8)) as usize,
                u64::from_le_bytes(read::<8>(p, ph + 0x20)) as usize,
            )
        };
        end = end.max(off.checked_add(filesz)?);
    }
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptx_is_sized_by_its_nul() {
        let ptx = b".version 8.0\n.target sm_90\n\0garbage";
        // SAFETY: NUL-terminated buffer.
        assert_eq!(unsafe { image_len(ptx.as_ptr()) }, Some(28));
    }

    #[test]
    fn fatbin_is_sized_by_its_header() {
        let mut f = [0u8; 16 + 100];
        f[0..4].copy_from_slice(&FATBIN_MAGIC.to_le_bytes());
        f[4..6].copy_from_slice(&1u16.to_le_bytes());
        f[6..8].copy_from_slice(&16u16.to_le_bytes());
        f[8..16].copy_from_slice(&100u64.to_le_bytes());
        // SAFETY: the buffer holds the whole fatbin.
        assert_eq!(unsafe { image_len(f.as_ptr()) }, Some(116));
        let wrapper: [u64; 3] = [(1u64 << 32) | WRAPPER_MAGIC as u64, f.as_ptr() as u64, 0];
        // SAFETY: a wrapper pointing at the fatbin above.
        assert_eq!(
            // SAFETY: a wrapper pointing at the fatbin above.
            unsafe { image_len(wrapper.as_ptr() as *const u8) },
            Some(116)
        );
        // SAFETY: as above.
        assert_eq!(unsafe { unwrap(wrapper.as_ptr() as *const u8) }, f.as_ptr());
    }

    #[test]
    fn elf_is_sized_by_its_headers() {
        // A minimal ELF64: header, one section of 32 bytes at 64, section headers at 96.
        let mut e = vec![0u8; 96 + 2 * 64];
        e[0..4].copy_from_slice(&ELF_MAGIC);
        e[0x28..0x30].copy_from_slice(&96u64.to_le_bytes());
        e[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        e[0x3C..0x3E].copy_from_slice(&2u16.to_le_bytes());
        let sh1 = 96 + 64;
        e[sh1 + 4..sh1 + 8].copy_from_slice(&1u32.to_le_bytes());
        e[sh1 + 0x18..sh1 + 0x20].copy_from_slice(&64u64.to_le_bytes());
        e[sh1 + 0x20..sh1 + 0x28].copy_from_slice(&32u64.to_le_bytes());
        // SAFETY: the buffer holds the whole ELF.
        assert_eq!(unsafe { image_len(e.as_ptr()) }, Some(96 + 128));
    }
}
