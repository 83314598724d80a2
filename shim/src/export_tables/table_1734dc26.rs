//! The table `1734dc26…` (17 slots), which cuDNN's precompiled engines and cuBLASLt ask for
//! once, calling slots 4 and 13 a few times at start-up. Nothing public describes it, and the
//! measured calls (docs/export-tables.md) show objects created and linked whose meaning is
//! unknown, so every slot fails with `CUDA_ERROR_NOT_SUPPORTED` and names itself on stderr:
//! the callers' error paths, rather than a fake success whose outputs they would then use.

use super::{stubs, Table};
use std::ffi::c_void;

const ID: usize = 7;

pub(super) static TABLE: Table<2> = Table::new(stubs!(ID; 0 1)).sized(17);
