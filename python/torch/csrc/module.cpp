// Python entry points of oxccl_torch._C: loading liboxccl and creating backends (the
// registration with torch.distributed is in oxccl_torch/__init__.py).
#include <torch/extension.h>

#include "backend.hpp"

namespace {

c10::intrusive_ptr<c10d::Backend> createBackend(const c10::intrusive_ptr<c10d::Store>& store,
                                                int rank, int size, double timeoutSeconds,
                                                const std::string& name) {
  auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeoutSeconds * 1000.0));
  return c10::make_intrusive<oxccl_torch::OxcclBackend>(store, rank, size, timeout, name);
}

std::string backendComm(const c10::intrusive_ptr<c10d::Backend>& b) {
  auto* ox = dynamic_cast<oxccl_torch::OxcclBackend*>(b.get());
  TORCH_CHECK_TYPE(ox != nullptr, "not an oxccl backend: ", b->getBackendName());
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%p", static_cast<void*>(ox->comm()));
  return buf;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "oxccl as a c10d backend (use through torch.distributed; see oxccl_torch)";
  m.def("load_library", &oxccl_torch::load, py::arg("path"),
        "Opens liboxccl at `path` (the oxccl package's library) once per process.");
  m.def("library_path", [] { return oxccl_torch::api().path; });
  m.def("header_version", [] { return OXCCL_VERSION_CODE; },
        "OXCCL_VERSION_CODE of the oxccl.h this extension was compiled with.");
  m.def("create_backend", &createBackend, py::arg("store"), py::arg("rank"), py::arg("size"),
        py::arg("timeout_seconds"), py::arg("name") = std::string(),
        py::call_guard<py::gil_scoped_release>(),
        "Joins a communicator through `store` (rank 0 publishes the unique id).");
  m.def("comm_handle", &backendComm, py::arg("backend"),
        "The oxcclComm_t of an oxccl backend, as a hex string (diagnostics).");
}
