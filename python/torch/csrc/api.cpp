#include "api.h"

#include <dlfcn.h>

#include <mutex>
#include <stdexcept>

#include <c10/util/Exception.h>

namespace oxccl_torch {

namespace {
Api g_api;
bool g_loaded = false;
std::mutex g_mu;
}  // namespace

void load(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_loaded) {
    if (path != g_api.path) {
      throw std::runtime_error("oxccl_torch: liboxccl is already loaded from " + g_api.path +
                               ", not loading " + path);
    }
    return;
  }
  // RTLD_LOCAL: the symbols stay out of the global namespace; ctypes opened the same file, so
  // this returns its handle (one copy of the library, one registry of communicators).
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (h == nullptr) {
    const char* e = dlerror();
    throw std::runtime_error("oxccl_torch: cannot open " + path + ": " + (e ? e : "?"));
  }
  Api a;
  std::string missing;
#define OXCCL_TORCH_SYM(f)                                          \
  a.f = reinterpret_cast<decltype(&::f)>(dlsym(h, #f));             \
  if (a.f == nullptr) missing += std::string(missing.empty() ? "" : ", ") + #f;
  OXCCL_TORCH_FUNCS(OXCCL_TORCH_SYM)
#undef OXCCL_TORCH_SYM
  if (!missing.empty()) {
    dlclose(h);
    throw std::runtime_error("oxccl_torch: " + path + " lacks " + missing +
                             " (a liboxccl older than the oxccl.h this extension was built with)");
  }
  int version = 0;
  if (a.oxcclGetVersion(&version) != oxcclSuccess || version / 100 != OXCCL_VERSION_CODE / 100) {
    dlclose(h);
    throw std::runtime_error(
        "oxccl_torch: " + path + " is liboxccl version code " + std::to_string(version) +
        " but this extension was built against " + std::to_string(OXCCL_VERSION_CODE) +
        " (major.minor must match: reinstall python/ and python/torch together)");
  }
  a.path = path;
  g_api = a;
  g_loaded = true;  // the handle stays open for the life of the process
}

const Api& api() {
  if (!g_loaded) {
    throw std::runtime_error("oxccl_torch: liboxccl is not loaded (import oxccl_torch first)");
  }
  return g_api;
}

const char* resultName(oxcclResult_t r) {
  switch (r) {
    case oxcclSuccess: return "oxcclSuccess";
    case oxcclSystemError: return "oxcclSystemError";
    case oxcclInternalError: return "oxcclInternalError";
    case oxcclInvalidArgument: return "oxcclInvalidArgument";
    case oxcclInvalidUsage: return "oxcclInvalidUsage";
    case oxcclRemoteError: return "oxcclRemoteError";
    case oxcclInProgress: return "oxcclInProgress";
    case oxcclTimeout: return "oxcclTimeout";
  }
  return "oxccl result ?";
}

void check(oxcclResult_t r, const char* what, oxcclComm_t comm) {
  if (r == oxcclSuccess) return;
  const Api& a = api();
  const char* msg = a.oxcclGetLastError(nullptr);
  if ((msg == nullptr || *msg == '\0') && comm != nullptr) msg = a.oxcclGetLastError(comm);
  std::string text = std::string("oxccl ") + what + " failed: " + resultName(r) + ": " +
                     (msg && *msg ? msg : a.oxcclGetErrorString(r));
  C10_THROW_ERROR(DistBackendError, text);
}

}  // namespace oxccl_torch
