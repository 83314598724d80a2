//! Simulated arrays (packed host byte buffers), box copies, and texture and surface objects
//! that remember their resource so the test kernels can read and write through them.

use super::State;
use crate::executor::{code, BoxCopy, GpuError, GpuResult, Mem, Place, Raw, Resource};
use baton_ipc::protocol::{element_bytes, ArrayCreate};

pub(super) struct SimArray {
    /// Bytes per row.
    row: u64,
    /// Rows per slice and slices (at least 1 each).
    height: u64,
    depth: u64,
    pub(super) bytes: Vec<u8>,
}

/// Texture and surface values look like the driver's: opaque non-zero 64-bit numbers.
const OBJECT_TAG: u64 = 0x7e00_0000_0000;

fn bad() -> GpuError {
    GpuError(code::INVALID_VALUE)
}

impl State {
    pub(super) fn array_create(&mut self, d: &ArrayCreate) -> GpuResult<Raw> {
        let elem = element_bytes(d.format, d.channels).ok_or(bad())?;
        let row = d.width.checked_mul(elem).ok_or(bad())?;
        let (height, depth) = (d.height.max(1), d.depth.max(1));
        let len = row
            .checked_mul(height)
            .and_then(|n| n.checked_mul(depth))
            .filter(|&n| n > 0)
            .ok_or(bad())?;
        if self.used + len > super::TOTAL_MEM {
            return Err(GpuError(code::OUT_OF_MEMORY));
        }
        self.used += len;
        let id = self.id();
        self.arrays.insert(
            id,
            SimArray {
                row,
                height,
                depth,
                bytes: vec![0xCD; len as usize],
            },
        );
        Ok(id)
    }

    pub(super) fn array_destroy(&mut self, raw: Raw) -> GpuResult<()> {
        let a = self
            .arrays
            .remove(&raw)
            .ok_or(GpuError(code::INVALID_HANDLE))?;
        self.used -= a.bytes.len() as u64;
        Ok(())
    }

    /// `width` bytes of row `y`, slice `z` of the box starting at `origin` in `place`.
    fn box_row(
        &mut self,
        place: Place,
        origin: [u64; 3],
        y: u64,
        z: u64,
        width: u64,
    ) -> GpuResult<&mut [u8]> {
        let (x, y, z) = (origin[0], origin[1] + y, origin[2] + z);
        match place {
            Place::Linear { mem, pitch, height } => {
                let base = match mem {
                    Mem::Device(p) => p,
                    Mem::Host(p) => p as u64,
                };
                let addr = z
                    .checked_mul(height)
                    .and_then(|r| r.checked_add(y))
                    .and_then(|r| r.checked_mul(pitch))
                    .and_then(|o| o.checked_add(x))
                    .and_then(|o| o.checked_add(base))
                    .ok_or(GpuError(code::ILLEGAL_ADDRESS))?;
                self.mem(addr, width)
            }
            Place::Array(raw) => {
                let a = self
                    .arrays
                    .get_mut(&raw)
                    .ok_or(GpuError(code::INVALID_HANDLE))?;
                if x + width > a.row || y >= a.height || z >= a.depth {
                    return Err(bad());
                }
                let off = ((z * a.height + y) * a.row + x) as usize;
                Ok(&mut a.bytes[off..off + width as usize])
            }
        }
    }

    pub(super) fn copy_3d(&mut self, c: &BoxCopy) -> GpuResult<()> {
        let [w, h, d] = c.extent;
        for z in 0..d {
            for y in 0..h {
                let tmp = self.box_row(c.src, c.src_origin, y, z, w)?.to_vec();
                self.box_row(c.dst, c.dst_origin, y, z, w)?
                    .copy_from_slice(&tmp);
            }
        }
        Ok(())
    }

    pub(super) fn object_create(&mut self, res: &Resource, surface: bool) -> GpuResult<u64> {
        match res {
            Resource::Array(raw) if !self.arrays.contains_key(raw) => {
                return Err(GpuError(code::INVALID_HANDLE))
            }
            Resource::Linear { .. } | Resource::Pitch2D { .. } if surface => return Err(bad()),
            _ => {}
        }
        let v = OBJECT_TAG | self.id();
        if surface {
            self.surfaces.insert(v, *res);
        } else {
            self.textures.insert(v, *res);
        }
        Ok(v)
    }

    pub(super) fn object_destroy(&mut self, v: u64, surface: bool) -> GpuResult<()> {
        let map = if surface {
            &mut self.surfaces
        } else {
            &mut self.textures
        };
        map.remove(&v).map(|_| ()).ok_or(bad())
    }

    /// The first `len` bytes a texture reads, rows packed (what `texRead` copies out).
    pub(super) fn texture_bytes(&mut self, tex: u64, len: u64) -> GpuResult<Vec<u8>> {
        let res = *self.textures.get(&tex).ok_or(bad())?;
        match res {
            Resource::Array(raw) => {
                let a = self.arrays.get(&raw).ok_or(bad())?;
                a.bytes.get(..len as usize).map(<[u8]>::to_vec).ok_or(bad())
            }
            Resource::Linear { ptr, .. } => Ok(self.mem(ptr, len)?.to_vec()),
            Resource::Pitch2D {
                ptr,
                format,
                channels,
                width,
                height,
                pitch,
            } => {
                let row = width * element_bytes(format, channels).ok_or(bad())?;
                let mut out = Vec::new();
                for y in 0..height {
                    if out.len() as u64 >= len {
                        break;
                    }
                    out.extend_from_slice(self.mem(ptr + y * pitch, row)?);
                }
                out.truncate(len as usize);
                Ok(out)
            }
        }
    }

    /// The array a surface writes (what `surfWrite` fills).
    pub(super) fn surface_array(&mut self, surf: u64) -> GpuResult<&mut SimArray> {
        match self.surfaces.get(&surf) {
            Some(Resource::Array(raw)) => self.arrays.get_mut(raw).ok_or(bad()),
            _ => Err(bad()),
        }
    }
}

impl super::SimExecutor {
    /// What texture object `tex` was created over, for tests to check handle translation.
    pub fn texture_resource(&self, tex: u64) -> Option<Resource> {
        self.lock().textures.get(&tex).copied()
    }

    /// How many arrays, textures and surfaces exist, for tests to check teardown.
    pub fn array_objects(&self) -> (usize, usize, usize) {
        let st = self.lock();
        (st.arrays.len(), st.textures.len(), st.surfaces.len())
    }
}
