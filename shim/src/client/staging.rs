//! Pageable copies through the region's staging chunks, pipelined: the client fills (or drains)
//! one chunk while the daemon DMAs another.
//!
//! One copy at a time holds the staging lock, so within a copy the client owns every chunk that
//! is not handed to the daemon: states go FREE -> DAEMON (command posted) -> FREE/FILLED/FAILED
//! (set by the daemon), and the copy leaves every chunk FREE before it returns.

use super::{lock, Client};
use baton_ipc::protocol::{Op, Staged};
use baton_ipc::region::{CHUNK_DAEMON, CHUNK_FAILED, CHUNK_FILLED, CHUNK_FREE};
use cuda_abi::CUresult;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub(crate) struct StagedCopy {
    pub device_ptr: u64,
    pub stream: u64,
}

impl Client {
    /// Waits until chunk `i` is no longer with the daemon; returns its state.
    fn settle(&self, i: u32) -> Result<u32, CUresult> {
        let state = self
            .region
            .chunk_state(i)
            .ok_or(CUresult::CUDA_ERROR_UNKNOWN)?;
        // Small copies come back within microseconds: spin briefly before sleeping.
        let spin_until = std::time::Instant::now() + Duration::from_micros(20);
        loop {
            let s = state.load(Ordering::Acquire);
            if s != CHUNK_DAEMON {
                return Ok(s);
            }
            if std::time::Instant::now() < spin_until {
                std::hint::spin_loop();
                continue;
            }
            baton_ipc::futex::wait(state, CHUNK_DAEMON, Some(Duration::from_millis(50)));
            if state.load(Ordering::Acquire) == CHUNK_DAEMON && !self.alive() {
                return Err(CUresult::CUDA_ERROR_DEVICE_UNAVAILABLE);
            }
        }
    }

    fn hand_over(
        &self,
        op: Op,
        i: u32,
        device_ptr: u64,
        len: usize,
        stream: u64,
    ) -> Result<(), CUresult> {
        let state = self
            .region
            .chunk_state(i)
            .ok_or(CUresult::CUDA_ERROR_UNKNOWN)?;
        state.store(CHUNK_DAEMON, Ordering::Release);
        let body = Staged {
            device_ptr,
            len: len as u64,
            stream,
            chunk: i,
            _pad: 0,
        };
        self.post(op, &body, &[])
            .inspect_err(|_| state.store(CHUNK_FREE, Ordering::Relaxed))
    }

    /// Copies host bytes `src` to device memory; returns once the daemon has finished with them.
    pub fn stage_htod(&self, to: StagedCopy, src: &[u8]) -> Result<(), CUresult> {
        let _g = lock(&self.staging);
        let n = self.region.layout().params.chunks;
        let size = self.region.chunk_size();
        let mut failed = false;
        for (k, piece) in src.chunks(size).enumerate() {
            let i = (k % n as usize) as u32;
            failed |= self.settle(i)? == CHUNK_FAILED;
            let dst = self
                .region
                .chunk_ptr(i)
                .ok_or(CUresult::CUDA_ERROR_UNKNOWN)?;
            // SAFETY: the chunk is `size >= piece.len()` bytes and ours (not with the daemon).
            unsafe { std::ptr::copy_nonoverlapping(piece.as_ptr(), dst, piece.len()) };
            self.hand_over(
                Op::CopyHtoDStaged,
                i,
                to.device_ptr + (k * size) as u64,
                piece.len(),
                to.stream,
            )?;
        }
        for i in 0..n {
            failed |= self.settle(i)? == CHUNK_FAILED;
            if let Some(s) = self.region.chunk_state(i) {
                s.store(CHUNK_FREE, Ordering::Relaxed);
            }
        }
        if failed {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        Ok(())
    }

    /// Copies device memory into host bytes `dst`.
    pub fn stage_dtoh(&self, from: StagedCopy, dst: &mut [u8]) -> Result<(), CUresult> {
        let _g = lock(&self.staging);
        let n = self.region.layout().params.chunks as usize;
        let size = self.region.chunk_size();
        let pieces: Vec<&mut [u8]> = dst.chunks_mut(size).collect();
        let count = pieces.len();
        let mut pieces = pieces.into_iter();
        let mut pending: std::collections::VecDeque<(u32, &mut [u8])> = Default::default();
        let mut failed = false;
        let drain = |i: u32, out: &mut [u8], failed: &mut bool| -> Result<(), CUresult> {
            match self.settle(i)? {
                CHUNK_FILLED => {
                    let src = self
                        .region
                        .chunk_ptr(i)
                        .ok_or(CUresult::CUDA_ERROR_UNKNOWN)?;
                    // SAFETY: the daemon filled `out.len() <= size` bytes and handed the chunk back.
                    unsafe { std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), out.len()) };
                }
                _ => *failed = true,
            }
            if let Some(s) = self.region.chunk_state(i) {
                s.store(CHUNK_FREE, Ordering::Relaxed);
            }
            Ok(())
        };
        for k in 0..count {
            let i = (k % n) as u32;
            if pending.len() == n {
                let (j, out) = pending.pop_front().expect("non-empty");
                drain(j, out, &mut failed)?;
            }
            let out = pieces.next().expect("count pieces");
            self.hand_over(
                Op::CopyDtoHStaged,
                i,
                from.device_ptr + (k * size) as u64,
                out.len(),
                from.stream,
            )?;
            pending.push_back((i, out));
        }
        while let Some((j, out)) = pending.pop_front() {
            drain(j, out, &mut failed)?;
        }
        if failed {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        Ok(())
    }
}
