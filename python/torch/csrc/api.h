// liboxccl's C ABI as a table of function pointers, filled by dlopen'ing the library that the
// `oxccl` Python package loads (oxccl/_lib.py: $OXCCL_LIBRARY, the bundled copy, ...), so that
// the process holds one liboxccl and this extension needs no rpath or link-time path.
#pragma once

#include <string>

#include "oxccl.h"

namespace oxccl_torch {

#define OXCCL_TORCH_FUNCS(X)                                                          \
  X(oxcclGetVersion)                                                                  \
  X(oxcclGetUniqueId)                                                                 \
  X(oxcclCommInitRankConfig)                                                          \
  X(oxcclCommSplit)                                                                   \
  X(oxcclCommDestroy)                                                                 \
  X(oxcclCommAbort)                                                                   \
  X(oxcclCommGetAsyncError)                                                           \
  X(oxcclGetErrorString)                                                              \
  X(oxcclGetLastError)                                                                \
  X(oxcclAllReduce)                                                                   \
  X(oxcclBroadcast)                                                                   \
  X(oxcclReduce)                                                                      \
  X(oxcclAllGather)                                                                   \
  X(oxcclReduceScatter)                                                               \
  X(oxcclReduceScatterv)                                                              \
  X(oxcclAlltoAll)                                                                    \
  X(oxcclAlltoAllv)                                                                   \
  X(oxcclGather)                                                                      \
  X(oxcclScatter)                                                                     \
  X(oxcclSend)                                                                        \
  X(oxcclRecv)                                                                        \
  X(oxcclSendAsync)                                                                   \
  X(oxcclRecvAsync)                                                                   \
  X(oxcclWait)                                                                        \
  X(oxcclBarrier)                                                                     \
  X(oxcclGroupStart)                                                                  \
  X(oxcclGroupEnd)                                                                    \
  X(oxcclRedOpCreatePreMulSum)                                                        \
  X(oxcclRedOpDestroy)

struct Api {
#define OXCCL_TORCH_FIELD(f) decltype(&::f) f = nullptr;
  OXCCL_TORCH_FUNCS(OXCCL_TORCH_FIELD)
#undef OXCCL_TORCH_FIELD
  std::string path;
};

// Opens liboxccl at `path` (once per process; a second call with another path is an error)
// and checks that its major.minor version is the header's. Throws std::runtime_error.
void load(const std::string& path);

// The table; throws if load() has not succeeded.
const Api& api();

// "oxcclRemoteError", ... (the enumerator's name).
const char* resultName(oxcclResult_t r);

// Throws c10::DistBackendError naming `what`, the result code and liboxccl's message (the
// calling thread's last error, else the communicator's) when `r` is not oxcclSuccess.
void check(oxcclResult_t r, const char* what, oxcclComm_t comm);

}  // namespace oxccl_torch
