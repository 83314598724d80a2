//! Occupancy queries, asked of the daemon once per distinct question and cached: frameworks ask
//! the same few questions on every launch.

use super::util::{out, ready, ret};
use crate::client::lock;
use crate::objects::Function;
use baton_ipc::protocol::{self as p, Op};
use cuda_abi::*;
use std::collections::HashMap;
use std::ffi::{c_int, c_uint};
use std::sync::Mutex;

type Key = (u64, u32, u32, u64, u32, u32);
static CACHE: Mutex<Option<HashMap<Key, (i64, i64)>>> = Mutex::new(None);

/// `cuOccupancyMaxActiveClusters` answers: (function, grid, block, cluster, shared memory).
type ClusterKey = (u64, [u32; 3], [u32; 3], [u32; 3], u32);
static CLUSTERS: Mutex<Option<HashMap<ClusterKey, i64>>> = Mutex::new(None);

/// Drops the cached answers about function `id` (its attributes changed).
pub(crate) fn forget(id: u64) {
    if let Some(m) = lock(&CACHE).as_mut() {
        m.retain(|k, _| k.0 != id);
    }
    if let Some(m) = lock(&CLUSTERS).as_mut() {
        m.retain(|k, _| k.0 != id);
    }
}

fn ask(
    f: &Function,
    kind: u32,
    block_size: u32,
    dynamic_smem: u64,
    flags: u32,
    limit: u32,
) -> Result<(i64, i64), CUresult> {
    let c = ready()?;
    let key = (f.id, kind, block_size, dynamic_smem, flags, limit);
    if let Some(v) = lock(&CACHE).get_or_insert_with(HashMap::new).get(&key) {
        return Ok(*v);
    }
    let body = p::Occupancy {
        func: f.id,
        kind,
        block_size,
        dynamic_smem,
        flags,
        block_size_limit: limit,
    };
    let r = c.call(Op::Occupancy, &body, &[])?;
    let v = (r.values[0] as i64, r.values[1] as i64);
    lock(&CACHE).get_or_insert_with(HashMap::new).insert(key, v);
    Ok(v)
}

pub(crate) unsafe fn cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
    n: *mut c_int,
    func: CUfunction,
    block: c_int,
    smem: usize,
    flags: c_uint,
) -> CUresult {
    ret((|| {
        let f = Function::from_handle(func)?;
        if block <= 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let (v, _) = ask(
            f,
            p::OCC_MAX_ACTIVE_BLOCKS,
            block as u32,
            smem as u64,
            flags,
            0,
        )?;
        // SAFETY: forwarded caller contract.
        unsafe { out(n, v as c_int) }
    })())
}

pub(crate) unsafe fn cuOccupancyMaxActiveBlocksPerMultiprocessor(
    n: *mut c_int,
    func: CUfunction,
    block: c_int,
    smem: usize,
) -> CUresult {
    // SAFETY: same contract.
    unsafe { cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(n, func, block, smem, 0) }
}

pub(crate) unsafe fn cuOccupancyAvailableDynamicSMemPerBlock(
    smem: *mut usize,
    func: CUfunction,
    blocks: c_int,
    block: c_int,
) -> CUresult {
    ret((|| {
        let f = Function::from_handle(func)?;
        if blocks <= 0 || block <= 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let (v, _) = ask(
            f,
            p::OCC_AVAILABLE_DYNAMIC_SMEM,
            block as u32,
            0,
            0,
            blocks as u32,
        )?;
        // SAFETY: forwarded caller contract.
        unsafe { out(smem, v as usize) }
    })())
}

#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn cuOccupancyMaxPotentialBlockSizeWithFlags(
    min_grid: *mut c_int,
    block_size: *mut c_int,
    func: CUfunction,
    smem_of: CUoccupancyB2DSize,
    smem: usize,
    limit: c_int,
    flags: c_uint,
) -> CUresult {
    ret((|| {
        let f = Function::from_handle(func)?;
        let (block, grid) = match smem_of {
            None => {
                let (b, g) = ask(
                    f,
                    p::OCC_MAX_POTENTIAL_BLOCK_SIZE,
                    0,
                    smem as u64,
                    flags,
                    limit.max(0) as u32,
                )?;
                (b, g)
            }
            Some(cb) => {
                // The per-block-size shared memory callback lives in this process: search the
                // block sizes here, asking the daemon for each one's occupancy.
                let c = ready()?;
                let dev = &c.devices[f.device as usize];
                let attr = |a: CUdevice_attribute| dev.attribute(a.0 as i32).unwrap_or(0) as i64;
                let sms = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).max(1);
                let warp = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_WARP_SIZE).max(1);
                let fmax = f
                    .attr(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK.0 as usize)
                    .unwrap_or(1024) as i64;
                let max = if limit > 0 {
                    fmax.min(limit as i64)
                } else {
                    fmax
                };
                let (mut best, mut best_block) = (0i64, 0i64);
                let mut b = (max / warp) * warp;
                while b > 0 {
                    // SAFETY: the caller's callback, called as the driver would call it.
                    let need = unsafe { cb(b as c_int) };
                    let (blocks, _) =
                        ask(f, p::OCC_MAX_ACTIVE_BLOCKS, b as u32, need as u64, flags, 0)?;
                    if blocks * b > best {
                        best = blocks * b;
                        best_block = b;
                    }
                    b -= warp;
                }
                let per_sm = if best_block > 0 { best / best_block } else { 0 };
                (best_block, per_sm * sms)
            }
        };
        // SAFETY: forwarded caller contract.
        unsafe {
            out(min_grid, grid as c_int)?;
            out(block_size, block as c_int)
        }
    })())
}

pub(crate) unsafe fn cuOccupancyMaxPotentialBlockSize(
    min_grid: *mut c_int,
    block_size: *mut c_int,
    func: CUfunction,
    smem_of: CUoccupancyB2DSize,
    smem: usize,
    limit: c_int,
) -> CUresult {
    // SAFETY: same contract.
    unsafe {
        cuOccupancyMaxPotentialBlockSizeWithFlags(
            min_grid, block_size, func, smem_of, smem, limit, 0,
        )
    }
}

pub(crate) unsafe fn cuOccupancyMaxActiveClusters(
    n: *mut c_int,
    func: CUfunction,
    config: *const CUlaunchConfig,
) -> CUresult {
    ret((|| {
        let c = ready()?;
        let f = Function::from_handle(func)?;
        if config.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: non-null config from the caller.
        let cfg = unsafe { &*config };
        let mut cluster = [0u32; 3];
        if cfg.numAttrs > 0 && !cfg.attrs.is_null() {
            for i in 0..cfg.numAttrs as usize {
                // SAFETY: `numAttrs` entries.
                let a = unsafe { &*cfg.attrs.add(i) };
                if a.id == CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION {
                    // SAFETY: the union member named by the id.
                    let d = unsafe { a.value.clusterDim };
                    cluster = [d.x, d.y, d.z];
                }
            }
        }
        let body = p::OccupancyClusters {
            func: f.id,
            grid: [cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ],
            block: [cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ],
            cluster,
            shared_mem: cfg.sharedMemBytes,
        };
        let key = (f.id, body.grid, body.block, cluster, body.shared_mem);
        let cached = lock(&CLUSTERS)
            .get_or_insert_with(HashMap::new)
            .get(&key)
            .copied();
        let v = match cached {
            Some(v) => v,
            None => {
                let v = c.call(Op::OccupancyClusters, &body, &[])?.values[0] as i64;
                lock(&CLUSTERS)
                    .get_or_insert_with(HashMap::new)
                    .insert(key, v);
                v
            }
        };
        // SAFETY: forwarded caller contract.
        unsafe { out(n, v as c_int) }
    })())
}
