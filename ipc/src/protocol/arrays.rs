//! Bodies of the array, texture and surface commands.
//!
//! Texture and view descriptors travel as byte-for-byte twins of the driver's C structs, so the
//! daemon can hand them to the driver without translating fields it does not need to check.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `cuArrayCreate`/`cuArray3DCreate`; answered with the array id.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ArrayCreate {
    pub device: u32,
    /// `CUarray_format`.
    pub format: u32,
    pub channels: u32,
    /// `CUDA_ARRAY3D_*` flags.
    pub flags: u32,
    pub width: u64,
    /// 0 for a 1D array.
    pub height: u64,
    /// 0 for a 1D or 2D array.
    pub depth: u64,
}

/// What one side of a [`Copy3D`] is (`CopySide::kind`).
pub const SIDE_DEVICE: u32 = 0;
/// Pinned host memory mapped in the daemon.
pub const SIDE_HOST: u32 = 1;
/// An array of the session; `addr` is its id.
pub const SIDE_ARRAY: u32 = 2;
/// The staging chunk `Copy3D::chunk`; `addr` is a byte offset into it.
pub const SIDE_CHUNK: u32 = 3;

/// One side of a [`Copy3D`]: where the copied box starts and how the memory is laid out.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CopySide {
    pub kind: u32,
    pub _pad: u32,
    pub addr: u64,
    /// Start of the box: x in bytes, y in rows, z in slices.
    pub x: u64,
    pub y: u64,
    pub z: u64,
    /// Bytes per row and rows per slice of linear memory (ignored for arrays).
    pub pitch: u64,
    pub height: u64,
}

/// A box copy of `width` bytes x `height` rows x `depth` slices between device memory, pinned
/// host memory, arrays and a staging chunk. With a chunk side the daemon finishes the copy
/// before it answers, so the client can reuse the chunk at once.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Copy3D {
    pub dst: CopySide,
    pub src: CopySide,
    pub width: u64,
    pub height: u64,
    pub depth: u64,
    pub stream: u64,
    pub chunk: u32,
    pub _pad: u32,
}

/// A texture or surface resource (`CUDA_RESOURCE_DESC`), with arrays named by session id.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ResourceDesc {
    /// `CUresourcetype`: array, mipmapped array, linear or pitch2D.
    pub kind: u32,
    pub flags: u32,
    /// Array id, or the device address of linear and pitch2D memory.
    pub handle: u64,
    pub format: u32,
    pub channels: u32,
    /// Linear: size in bytes. Pitch2D: width in elements.
    pub width: u64,
    pub height: u64,
    pub pitch: u64,
}

/// `CUresourcetype` values.
pub const RESOURCE_ARRAY: u32 = 0;
pub const RESOURCE_MIPMAPPED_ARRAY: u32 = 1;
pub const RESOURCE_LINEAR: u32 = 2;
pub const RESOURCE_PITCH2D: u32 = 3;

/// `CUDA_TEXTURE_DESC`, field for field (floats as their bits).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct TextureDesc {
    pub address_mode: [u32; 3],
    pub filter_mode: u32,
    pub flags: u32,
    pub max_anisotropy: u32,
    pub mipmap_filter_mode: u32,
    pub mipmap_level_bias: u32,
    pub min_mipmap_level_clamp: u32,
    pub max_mipmap_level_clamp: u32,
    pub border_color: [u32; 4],
    pub reserved: [u32; 12],
}

/// `CUDA_RESOURCE_VIEW_DESC`, field for field.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ViewDesc {
    pub format: u32,
    pub _pad: u32,
    pub width: u64,
    pub height: u64,
    pub depth: u64,
    pub first_mipmap_level: u32,
    pub last_mipmap_level: u32,
    pub first_layer: u32,
    pub last_layer: u32,
    pub reserved: [u32; 16],
}

/// `cuTexObjectCreate`; answered with the driver's texture object value.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct TexObjectCreate {
    pub device: u32,
    /// 1 if `view` is given.
    pub has_view: u32,
    pub resource: ResourceDesc,
    pub texture: TextureDesc,
    pub view: ViewDesc,
}

/// `cuSurfObjectCreate`; answered with the driver's surface object value.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SurfObjectCreate {
    pub device: u32,
    pub _pad: u32,
    pub resource: ResourceDesc,
}

/// Bytes per channel of a `CUarray_format` whose elements are whole bytes per channel; `None`
/// for block-compressed, packed and planar video formats, which Baton does not stage.
pub fn format_channel_bytes(format: u32) -> Option<u64> {
    match format {
        1 | 8 => Some(1),         // (UN)SIGNED_INT8
        2 | 9 | 0x10 => Some(2),  // (UN)SIGNED_INT16, HALF
        3 | 10 | 0x20 => Some(4), // (UN)SIGNED_INT32, FLOAT
        0xc0..=0xc2 => Some(1),   // UNORM_INT8X1/2/4
        0xc3..=0xc5 => Some(2),   // UNORM_INT16X1/2/4
        0xc6..=0xc8 => Some(1),   // SNORM_INT8X1/2/4
        0xc9..=0xcb => Some(2),   // SNORM_INT16X1/2/4
        _ => None,
    }
}

/// Bytes per element of an array of `format` with `channels` channels, if Baton knows it.
pub fn element_bytes(format: u32, channels: u32) -> Option<u64> {
    if !matches!(channels, 1 | 2 | 4) {
        return None;
    }
    Some(format_channel_bytes(format)? * channels as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_match_the_c_layouts() {
        // Sizes of CUDA_TEXTURE_DESC and CUDA_RESOURCE_VIEW_DESC in cuda.h.
        assert_eq!(core::mem::size_of::<TextureDesc>(), 104);
        assert_eq!(core::mem::size_of::<ViewDesc>(), 112);
        assert_eq!(element_bytes(0x20, 4), Some(16));
        assert_eq!(element_bytes(1, 3), None);
        assert_eq!(element_bytes(0x91, 1), None);
    }
}
