//! Generated code; do not edit. `exports` and `stubs` come from `cuda-abi/regen.sh`,
//! `proc_table` from `tools/proc-address/gen_table.py`.

pub(crate) mod exports;
pub(crate) mod proc_table;
pub(crate) mod stubs;
