//! Implementations of the driver entry points, grouped by API area.
//!
//! Every name starts as the generated stub (`CUDA_ERROR_NOT_SUPPORTED`) through the glob import
//! below; an explicit `pub(crate) use` of an implemented function shadows its stub, and a
//! signature that differs from the header's fails to compile in the generated export layer.
//! Functions keep the driver's names, so they are not snake case.
#![allow(non_snake_case)]

mod array;
mod array_copy;
mod compat;
mod conditional;
pub(crate) mod context;
mod error_text;
mod graph;
mod graph_build;
mod graph_mem;
mod graph_pageable;
mod host_func;
mod init;
mod ipc;
mod launch;
mod link;
pub(crate) mod memory;
mod module;
mod occupancy;
mod pools;
mod proc_address;
mod stream;
mod util;
mod vmm;

#[allow(unused_imports)]
pub(crate) use crate::generated::stubs::*;

pub(crate) use crate::export_tables::cuGetExportTable;

pub(crate) use array::{
    cuArray3DCreate_v2, cuArray3DGetDescriptor_v2, cuArrayCreate_v2, cuArrayDestroy,
    cuArrayGetDescriptor_v2, cuArrayGetSparseProperties, cuSurfObjectCreate, cuSurfObjectDestroy,
    cuSurfObjectGetResourceDesc, cuTexObjectCreate, cuTexObjectDestroy, cuTexObjectGetResourceDesc,
    cuTexObjectGetResourceViewDesc, cuTexObjectGetTextureDesc,
};
pub(crate) use array_copy::{
    cuMemcpy3DAsync_v2, cuMemcpy3D_v2, cuMemcpyAtoA_v2, cuMemcpyAtoD_v2, cuMemcpyAtoHAsync_v2,
    cuMemcpyAtoH_v2, cuMemcpyDtoA_v2, cuMemcpyHtoAAsync_v2, cuMemcpyHtoA_v2,
};
pub(crate) use compat::{
    cuCtxDestroy, cuCtxGetCacheConfig, cuCtxGetDevice_v2, cuCtxGetLimit, cuCtxPopCurrent,
    cuCtxPushCurrent, cuCtxResetPersistingL2Cache, cuCtxSetCacheConfig, cuCtxSetLimit,
    cuCtxSynchronize_v2, cuDeviceGetLuid, cuDevicePrimaryCtxRelease, cuDevicePrimaryCtxReset,
    cuDevicePrimaryCtxSetFlags, cuEventDestroy, cuFuncGetParamInfo, cuFuncSetCacheConfig,
    cuKernelSetCacheConfig, cuModuleGetLoadingMode, cuProfilerStart, cuProfilerStop,
    cuStreamDestroy, cuStreamGetDevice, cuStreamGetId, cuThreadExchangeStreamCaptureMode,
};
pub(crate) use conditional::{
    cuGraphConditionalHandleCreate, cuStreamBeginCaptureToGraph, cuStreamUpdateCaptureDependencies,
    cuStreamUpdateCaptureDependencies_v2,
};
pub(crate) use context::{
    cuCtxCreate_v2, cuCtxCreate_v4, cuCtxDestroy_v2, cuCtxGetApiVersion, cuCtxGetCurrent,
    cuCtxGetDevice, cuCtxGetFlags, cuCtxGetId, cuCtxGetStreamPriorityRange, cuCtxPopCurrent_v2,
    cuCtxPushCurrent_v2, cuCtxSetCurrent, cuCtxSynchronize, cuDevicePrimaryCtxGetState,
    cuDevicePrimaryCtxRelease_v2, cuDevicePrimaryCtxReset_v2, cuDevicePrimaryCtxRetain,
    cuDevicePrimaryCtxSetFlags_v2,
};
pub(crate) use graph::{
    cuGraphDestroy, cuGraphExecDestroy, cuGraphInstantiateWithFlags, cuGraphInstantiateWithParams,
    cuGraphInstantiate_v2, cuGraphLaunch, cuGraphUpload, cuStreamBeginCapture,
    cuStreamBeginCapture_v2, cuStreamEndCapture, cuStreamGetCaptureInfo, cuStreamGetCaptureInfo_v2,
    cuStreamGetCaptureInfo_v3, cuStreamIsCapturing,
};
pub(crate) use graph_build::{
    cuGraphAddChildGraphNode, cuGraphAddDependencies, cuGraphAddDependencies_v2,
    cuGraphAddEmptyNode, cuGraphAddHostNode, cuGraphAddKernelNode, cuGraphAddKernelNode_v2,
    cuGraphAddMemcpyNode, cuGraphAddMemsetNode, cuGraphAddNode, cuGraphAddNode_v2, cuGraphClone,
    cuGraphCreate, cuGraphDestroyNode, cuGraphExecHostNodeSetParams,
    cuGraphExecKernelNodeSetParams_v2, cuGraphExecNodeSetParams, cuGraphExecUpdate_v2,
    cuGraphGetNodes, cuGraphGetRootNodes, cuGraphHostNodeGetParams, cuGraphHostNodeSetParams,
    cuGraphKernelNodeGetParams_v2, cuGraphKernelNodeSetParams_v2, cuGraphNodeGetType,
    cuGraphNodeSetParams, cuTensorMapEncodeIm2col, cuTensorMapEncodeTiled,
};
pub(crate) use graph_mem::{
    cuDeviceGetGraphMemAttribute, cuDeviceGraphMemTrim, cuDeviceSetGraphMemAttribute,
    cuGraphAddMemAllocNode, cuGraphAddMemFreeNode, cuGraphMemAllocNodeGetParams,
    cuGraphMemFreeNodeGetParams,
};
pub(crate) use host_func::{cuLaunchHostFunc, cuStreamAddCallback};
pub(crate) use init::{
    cuDeviceCanAccessPeer, cuDeviceComputeCapability, cuDeviceGet, cuDeviceGetAttribute,
    cuDeviceGetByPCIBusId, cuDeviceGetCount, cuDeviceGetName, cuDeviceGetPCIBusId, cuDeviceGetUuid,
    cuDeviceGetUuid_v2, cuDeviceTotalMem_v2, cuDriverGetVersion, cuGetErrorName, cuGetErrorString,
    cuInit,
};
pub(crate) use ipc::{
    cuIpcCloseMemHandle, cuIpcGetEventHandle, cuIpcGetMemHandle, cuIpcOpenEventHandle,
    cuIpcOpenMemHandle, cuIpcOpenMemHandle_v2, cuMemExportToShareableHandle,
    cuMemImportFromShareableHandle,
};
pub(crate) use launch::{cuLaunchCooperativeKernel, cuLaunchKernel, cuLaunchKernelEx};
pub(crate) use link::{
    cuLinkAddData, cuLinkAddData_v2, cuLinkAddFile, cuLinkAddFile_v2, cuLinkComplete, cuLinkCreate,
    cuLinkCreate_v2, cuLinkDestroy,
};
pub(crate) use memory::{
    cuMemAdvise, cuMemAdvise_v2, cuMemAllocAsync, cuMemAllocHost_v2, cuMemAllocManaged,
    cuMemAllocPitch_v2, cuMemAlloc_v2, cuMemFreeAsync, cuMemFreeHost, cuMemFree_v2,
    cuMemGetAddressRange_v2, cuMemGetInfo_v2, cuMemHostAlloc, cuMemHostGetDevicePointer_v2,
    cuMemHostGetFlags, cuMemHostRegister_v2, cuMemHostUnregister, cuMemPrefetchAsync,
    cuMemPrefetchAsync_v2, cuMemcpy, cuMemcpy2DAsync_v2, cuMemcpy2DUnaligned_v2, cuMemcpy2D_v2,
    cuMemcpyAsync, cuMemcpyDtoDAsync_v2, cuMemcpyDtoD_v2, cuMemcpyDtoHAsync_v2, cuMemcpyDtoH_v2,
    cuMemcpyHtoDAsync_v2, cuMemcpyHtoD_v2, cuMemsetD16Async, cuMemsetD16_v2, cuMemsetD2D16Async,
    cuMemsetD2D16_v2, cuMemsetD2D32Async, cuMemsetD2D32_v2, cuMemsetD2D8Async, cuMemsetD2D8_v2,
    cuMemsetD32Async, cuMemsetD32_v2, cuMemsetD8Async, cuMemsetD8_v2, cuPointerGetAttribute,
    cuPointerGetAttributes, cuStreamAttachMemAsync,
};
pub(crate) use module::module_functions;
pub(crate) use module::{
    cuFuncGetAttribute, cuFuncGetModule, cuFuncGetName, cuFuncSetAttribute, cuKernelGetAttribute,
    cuKernelGetFunction, cuKernelGetName, cuKernelSetAttribute, cuLibraryEnumerateKernels,
    cuLibraryGetGlobal, cuLibraryGetKernel, cuLibraryGetKernelCount, cuLibraryLoadData,
    cuLibraryUnload, cuModuleEnumerateFunctions, cuModuleGetFunction, cuModuleGetFunctionCount,
    cuModuleGetGlobal_v2, cuModuleLoad, cuModuleLoadData, cuModuleLoadDataEx,
    cuModuleLoadFatBinary, cuModuleUnload,
};
pub(crate) use occupancy::{
    cuOccupancyAvailableDynamicSMemPerBlock, cuOccupancyMaxActiveBlocksPerMultiprocessor,
    cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags, cuOccupancyMaxActiveClusters,
    cuOccupancyMaxPotentialBlockSize, cuOccupancyMaxPotentialBlockSizeWithFlags,
};
pub(crate) use pools::{
    cuDeviceGetDefaultMemPool, cuDeviceGetMemPool, cuDeviceSetMemPool, cuMemAllocFromPoolAsync,
    cuMemPoolCreate, cuMemPoolDestroy, cuMemPoolExportPointer, cuMemPoolExportToShareableHandle,
    cuMemPoolGetAccess, cuMemPoolGetAttribute, cuMemPoolImportFromShareableHandle,
    cuMemPoolImportPointer, cuMemPoolSetAccess, cuMemPoolSetAttribute, cuMemPoolTrimTo,
};
pub(crate) use proc_address::{cuGetProcAddress, cuGetProcAddress_v2};
pub(crate) use stream::{
    cuEventCreate, cuEventDestroy_v2, cuEventElapsedTime, cuEventElapsedTime_v2, cuEventQuery,
    cuEventRecord, cuEventRecordWithFlags, cuEventSynchronize, cuStreamCreate,
    cuStreamCreateWithPriority, cuStreamDestroy_v2, cuStreamGetAttribute, cuStreamGetCtx,
    cuStreamGetFlags, cuStreamGetPriority, cuStreamQuery, cuStreamSetAttribute,
    cuStreamSynchronize, cuStreamWaitEvent,
};
pub(crate) use vmm::{
    cuMemAddressFree, cuMemAddressReserve, cuMemCreate, cuMemGetAccess,
    cuMemGetAllocationGranularity, cuMemGetAllocationPropertiesFromHandle, cuMemMap, cuMemRelease,
    cuMemRetainAllocationHandle, cuMemSetAccess, cuMemUnmap,
};

// The per-thread-default-stream spellings (`_ptsz`/`_ptds`) have the same signatures; Baton
// treats the per-thread default stream as the legacy one for now, so they share the code.
pub(crate) use self::cuEventRecord as cuEventRecord_ptsz;
pub(crate) use self::cuEventRecordWithFlags as cuEventRecordWithFlags_ptsz;
pub(crate) use self::cuGraphLaunch as cuGraphLaunch_ptsz;
pub(crate) use self::cuGraphUpload as cuGraphUpload_ptsz;
pub(crate) use self::cuLaunchCooperativeKernel as cuLaunchCooperativeKernel_ptsz;
pub(crate) use self::cuLaunchHostFunc as cuLaunchHostFunc_ptsz;
pub(crate) use self::cuLaunchKernel as cuLaunchKernel_ptsz;
pub(crate) use self::cuLaunchKernelEx as cuLaunchKernelEx_ptsz;
pub(crate) use self::cuMemAllocAsync as cuMemAllocAsync_ptsz;
pub(crate) use self::cuMemAllocFromPoolAsync as cuMemAllocFromPoolAsync_ptsz;
pub(crate) use self::cuMemFreeAsync as cuMemFreeAsync_ptsz;
pub(crate) use self::cuMemPrefetchAsync as cuMemPrefetchAsync_ptsz;
pub(crate) use self::cuMemPrefetchAsync_v2 as cuMemPrefetchAsync_v2_ptsz;
pub(crate) use self::cuMemcpy as cuMemcpy_ptds;
pub(crate) use self::cuMemcpy2DAsync_v2 as cuMemcpy2DAsync_v2_ptsz;
pub(crate) use self::cuMemcpy2DUnaligned_v2 as cuMemcpy2DUnaligned_v2_ptds;
pub(crate) use self::cuMemcpy2D_v2 as cuMemcpy2D_v2_ptds;
pub(crate) use self::cuMemcpy3DAsync_v2 as cuMemcpy3DAsync_v2_ptsz;
pub(crate) use self::cuMemcpy3D_v2 as cuMemcpy3D_v2_ptds;
pub(crate) use self::cuMemcpyAsync as cuMemcpyAsync_ptsz;
pub(crate) use self::cuMemcpyAtoA_v2 as cuMemcpyAtoA_v2_ptds;
pub(crate) use self::cuMemcpyAtoD_v2 as cuMemcpyAtoD_v2_ptds;
pub(crate) use self::cuMemcpyAtoHAsync_v2 as cuMemcpyAtoHAsync_v2_ptsz;
pub(crate) use self::cuMemcpyAtoH_v2 as cuMemcpyAtoH_v2_ptds;
pub(crate) use self::cuMemcpyDtoA_v2 as cuMemcpyDtoA_v2_ptds;
pub(crate) use self::cuMemcpyDtoDAsync_v2 as cuMemcpyDtoDAsync_v2_ptsz;
pub(crate) use self::cuMemcpyDtoD_v2 as cuMemcpyDtoD_v2_ptds;
pub(crate) use self::cuMemcpyDtoHAsync_v2 as cuMemcpyDtoHAsync_v2_ptsz;
pub(crate) use self::cuMemcpyDtoH_v2 as cuMemcpyDtoH_v2_ptds;
pub(crate) use self::cuMemcpyHtoAAsync_v2 as cuMemcpyHtoAAsync_v2_ptsz;
pub(crate) use self::cuMemcpyHtoA_v2 as cuMemcpyHtoA_v2_ptds;
pub(crate) use self::cuMemcpyHtoDAsync_v2 as cuMemcpyHtoDAsync_v2_ptsz;
pub(crate) use self::cuMemcpyHtoD_v2 as cuMemcpyHtoD_v2_ptds;
pub(crate) use self::cuMemsetD16Async as cuMemsetD16Async_ptsz;
pub(crate) use self::cuMemsetD16_v2 as cuMemsetD16_v2_ptds;
pub(crate) use self::cuMemsetD2D16Async as cuMemsetD2D16Async_ptsz;
pub(crate) use self::cuMemsetD2D16_v2 as cuMemsetD2D16_v2_ptds;
pub(crate) use self::cuMemsetD2D32Async as cuMemsetD2D32Async_ptsz;
pub(crate) use self::cuMemsetD2D32_v2 as cuMemsetD2D32_v2_ptds;
pub(crate) use self::cuMemsetD2D8Async as cuMemsetD2D8Async_ptsz;
pub(crate) use self::cuMemsetD2D8_v2 as cuMemsetD2D8_v2_ptds;
pub(crate) use self::cuMemsetD32Async as cuMemsetD32Async_ptsz;
pub(crate) use self::cuMemsetD32_v2 as cuMemsetD32_v2_ptds;
pub(crate) use self::cuMemsetD8Async as cuMemsetD8Async_ptsz;
pub(crate) use self::cuMemsetD8_v2 as cuMemsetD8_v2_ptds;
pub(crate) use self::cuStreamAddCallback as cuStreamAddCallback_ptsz;
pub(crate) use self::cuStreamAttachMemAsync as cuStreamAttachMemAsync_ptsz;
pub(crate) use self::cuStreamBeginCapture as cuStreamBeginCapture_ptsz;
pub(crate) use self::cuStreamBeginCaptureToGraph as cuStreamBeginCaptureToGraph_ptsz;
pub(crate) use self::cuStreamBeginCapture_v2 as cuStreamBeginCapture_v2_ptsz;
pub(crate) use self::cuStreamEndCapture as cuStreamEndCapture_ptsz;
pub(crate) use self::cuStreamGetAttribute as cuStreamGetAttribute_ptsz;
pub(crate) use self::cuStreamGetCaptureInfo as cuStreamGetCaptureInfo_ptsz;
pub(crate) use self::cuStreamGetCaptureInfo_v2 as cuStreamGetCaptureInfo_v2_ptsz;
pub(crate) use self::cuStreamGetCaptureInfo_v3 as cuStreamGetCaptureInfo_v3_ptsz;
pub(crate) use self::cuStreamGetCtx as cuStreamGetCtx_ptsz;
pub(crate) use self::cuStreamGetDevice as cuStreamGetDevice_ptsz;
pub(crate) use self::cuStreamGetFlags as cuStreamGetFlags_ptsz;
pub(crate) use self::cuStreamGetId as cuStreamGetId_ptsz;
pub(crate) use self::cuStreamGetPriority as cuStreamGetPriority_ptsz;
pub(crate) use self::cuStreamIsCapturing as cuStreamIsCapturing_ptsz;
pub(crate) use self::cuStreamQuery as cuStreamQuery_ptsz;
pub(crate) use self::cuStreamSetAttribute as cuStreamSetAttribute_ptsz;
pub(crate) use self::cuStreamSynchronize as cuStreamSynchronize_ptsz;
pub(crate) use self::cuStreamUpdateCaptureDependencies as cuStreamUpdateCaptureDependencies_ptsz;
pub(crate) use self::cuStreamUpdateCaptureDependencies_v2 as cuStreamUpdateCaptureDependencies_v2_ptsz;
pub(crate) use self::cuStreamWaitEvent as cuStreamWaitEvent_ptsz;
