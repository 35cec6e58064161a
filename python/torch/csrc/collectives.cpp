// The operations of OxcclBackend: argument checks on the calling thread (a refused call
// raises there, before anything is queued or sent), then the oxccl calls the worker runs.
//
// Reductions pass the tensor's element type; operations that only move data pass bytes
// (oxcclUint8, nbytes), so they take any dtype. Tensors must be dense, contiguous CPU tensors:
// oxccl does not copy a non-contiguous one (the error says to pass .contiguous()). List
// arguments (allgather's outputs, scatter's inputs, ...) go through one packed buffer.
#include <cstring>
#include <numeric>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "backend.hpp"

namespace oxccl_torch {

namespace {

using c10d::OpType;
using c10d::ReduceOp;

void checkTensor(const at::Tensor& t, const char* op) {
  TORCH_CHECK_VALUE(t.defined(), "oxccl: ", op, ": undefined tensor");
  TORCH_CHECK_VALUE(t.device().is_cpu(), "oxccl: ", op, ": the tensor is on ", t.device(),
                    "; the oxccl backend moves CPU tensors only");
  TORCH_CHECK_VALUE(t.layout() == at::kStrided, "oxccl: ", op,
                    ": sparse tensors are not supported");
  TORCH_CHECK_VALUE(t.is_contiguous(), "oxccl: ", op,
                    ": the tensor is not contiguous; the oxccl backend does not copy "
                    "non-contiguous tensors (pass tensor.contiguous())");
}

void checkTensors(const std::vector<at::Tensor>& ts, const at::Tensor& like, const char* op) {
  for (const auto& t : ts) {
    checkTensor(t, op);
    TORCH_CHECK_TYPE(t.scalar_type() == like.scalar_type(), "oxccl: ", op, ": tensors of ",
                     t.scalar_type(), " and ", like.scalar_type(), " mixed");
  }
}

at::Tensor& single(std::vector<at::Tensor>& ts, const char* op) {
  TORCH_CHECK_VALUE(ts.size() == 1, "oxccl: ", op, " takes one tensor per rank, not ",
                    ts.size());
  checkTensor(ts[0], op);
  return ts[0];
}

void checkRank(int64_t r, int size, const char* op, const char* what) {
  TORCH_CHECK_VALUE(r >= 0 && r < size, "oxccl: ", op, ": ", what, " ", r,
                    " is not a rank of this group (0..", size - 1, ")");
}

// Reducible element types.
oxcclDataType_t reduceType(at::ScalarType t, const char* op) {
  switch (t) {
    case at::kFloat: return oxcclFloat32;
    case at::kDouble: return oxcclFloat64;
    case at::kHalf: return oxcclFloat16;
    case at::kBFloat16: return oxcclBfloat16;
    case at::kChar: return oxcclInt8;
    case at::kByte: return oxcclUint8;
    case at::kBool: return oxcclUint8;  // 0/1 bytes; the ops are mapped (see reduction())
    case at::kInt: return oxcclInt32;
    case at::kLong: return oxcclInt64;
    case at::kUInt32: return oxcclUint32;
    case at::kUInt64: return oxcclUint64;
    case at::kFloat8_e4m3fn: return oxcclFloat8e4m3;
    case at::kFloat8_e5m2: return oxcclFloat8e5m2;
    default: break;
  }
  TORCH_CHECK_TYPE(false, "oxccl: ", op, ": reductions of ", t,
                   " are not supported (float32, float64, float16, bfloat16, int8, uint8, "
                   "int32, int64, uint32, uint64, bool, float8_e4m3fn, float8_e5m2)");
  return oxcclUint8;  // unreachable
}

// A reduction as oxccl runs it: element type, op, and for PREMUL_SUM the factor (one element
// of the tensor's dtype).
struct Reduction {
  oxcclDataType_t dt;
  oxcclRedOp_t op;
  at::Tensor factor;
};

Reduction reduction(const ReduceOp& rop, at::ScalarType t, const char* op) {
  Reduction r{reduceType(t, op), oxcclSum, {}};
  const bool isBool = t == at::kBool;
  const bool isFloat = at::isFloatingType(t);
  switch (rop.op_) {
    // bool as gloo reduces it: sum and max are "or", product and min are "and".
    case ReduceOp::SUM: r.op = isBool ? oxcclMax : oxcclSum; break;
    case ReduceOp::PRODUCT: r.op = isBool ? oxcclMin : oxcclProd; break;
    case ReduceOp::MIN: r.op = oxcclMin; break;
    case ReduceOp::MAX: r.op = oxcclMax; break;
    case ReduceOp::AVG:
      TORCH_CHECK_VALUE(!isBool, "oxccl: ", op, ": ReduceOp.AVG is not defined for bool");
      r.op = oxcclAvg;  // integers truncate toward zero
      break;
    case ReduceOp::BAND:
    case ReduceOp::BOR:
    case ReduceOp::BXOR:
      TORCH_CHECK_VALUE(!isFloat, "oxccl: ", op, ": ReduceOp.",
                        rop.op_ == ReduceOp::BAND ? "BAND" : rop.op_ == ReduceOp::BOR ? "BOR" : "BXOR",
                        " needs integer or bool tensors, not ", t);
      r.op = rop.op_ == ReduceOp::BAND ? oxcclBand : rop.op_ == ReduceOp::BOR ? oxcclBor : oxcclBxor;
      break;
    case ReduceOp::PREMUL_SUM: {
      TORCH_CHECK_VALUE(isFloat, "oxccl: ", op,
                        ": ReduceOp.PREMUL_SUM is supported for floating-point tensors only, not ",
                        t);
      auto* s = dynamic_cast<c10d::PreMulSumSupplement*>(rop.supplement_.get());
      TORCH_CHECK_VALUE(s != nullptr, "oxccl: ", op, ": PREMUL_SUM without its factor");
      if (s->tensor_factor.defined()) {
        r.factor = s->tensor_factor.to(at::kCPU).to(t).contiguous().reshape({1});
      } else {
        r.factor = at::full({1}, s->double_factor, at::TensorOptions().dtype(t));
      }
      break;
    }
    default:
      TORCH_CHECK_VALUE(false, "oxccl: ", op, ": unsupported ReduceOp ",
                        static_cast<int>(rop.op_));
  }
  return r;
}

// Destroys a pre-multiplied-sum op when the entry that created it is done.
struct PremulOp {
  oxcclComm_t comm = nullptr;
  oxcclRedOp_t op = oxcclSum;
  ~PremulOp() {
    if (comm != nullptr) api().oxcclRedOpDestroy(op, comm);
  }
};

// An Op whose call gets the oxccl op number (a pre-multiplied sum made in `pre`).
Op reducing(const Reduction& red, std::function<void(oxcclComm_t, oxcclRedOp_t)> call) {
  Op o;
  if (!red.factor.defined()) {
    oxcclRedOp_t op = red.op;
    o.call = [op, call](oxcclComm_t c) { call(c, op); };
    return o;
  }
  auto holder = std::make_shared<PremulOp>();
  at::Tensor factor = red.factor;
  oxcclDataType_t dt = red.dt;
  o.pre = [holder, factor, dt](oxcclComm_t c) {
    oxcclRedOp_t op;
    check(api().oxcclRedOpCreatePreMulSum(&op, factor.data_ptr(), dt, oxcclScalarHostImmediate, c),
          "PREMUL_SUM op", c);
    holder->comm = c;
    holder->op = op;
  };
  o.call = [holder, call](oxcclComm_t c) { call(c, holder->op); };
  return o;
}

size_t count(const at::Tensor& t) { return static_cast<size_t>(t.numel()); }
size_t bytes(const at::Tensor& t) { return t.nbytes(); }
char* ptr(const at::Tensor& t) { return static_cast<char*>(t.data_ptr()); }

// A byte buffer holding `ts` end to end.
at::Tensor packed(size_t n) { return at::empty({static_cast<int64_t>(n)}, at::kByte); }

void pack(const std::vector<at::Tensor>& ts, const at::Tensor& buf) {
  size_t off = 0;
  for (const auto& t : ts) {
    if (bytes(t)) std::memcpy(ptr(buf) + off, t.data_ptr(), bytes(t));
    off += bytes(t);
  }
}

void unpack(const at::Tensor& buf, const std::vector<at::Tensor>& ts) {
  size_t off = 0;
  for (const auto& t : ts) {
    if (bytes(t)) std::memcpy(t.data_ptr(), ptr(buf) + off, bytes(t));
    off += bytes(t);
  }
}

size_t totalBytes(const std::vector<at::Tensor>& ts) {
  size_t n = 0;
  for (const auto& t : ts) n += bytes(t);
  return n;
}

// alltoallv's four arrays (send counts, send displacements, receive counts, receive
// displacements), kept alive by the closure that passes them.
struct Blocks {
  std::vector<size_t> sc, sd, rc, rd;
};

Op allGatherOp(at::Tensor output, at::Tensor input) {
  Op o;
  o.call = [output, input](oxcclComm_t c) {
    check(api().oxcclAllGather(input.data_ptr(), output.data_ptr(), bytes(input), oxcclUint8, c),
          "allgather", c);
  };
  return o;
}

// allgather into a list: through one packed buffer.
Op allGatherListOp(std::vector<at::Tensor> outputs, at::Tensor input, int size,
                   const char* name) {
  TORCH_CHECK_VALUE(static_cast<int>(outputs.size()) == size, "oxccl: ", name, ": ",
                    outputs.size(), " output tensors for ", size, " ranks");
  checkTensors(outputs, input, name);
  for (const auto& t : outputs) {
    TORCH_CHECK_VALUE(t.numel() == input.numel(), "oxccl: ", name, ": output of ", t.numel(),
                      " elements for an input of ", input.numel());
  }
  at::Tensor buf = packed(bytes(input) * size);
  Op o;
  o.call = [buf, input](oxcclComm_t c) {
    check(api().oxcclAllGather(input.data_ptr(), buf.data_ptr(), bytes(input), oxcclUint8, c),
          "allgather", c);
  };
  o.post = [buf, outputs](oxcclComm_t) { unpack(buf, outputs); };
  return o;
}

Op reduceScatterOp(at::Tensor output, at::Tensor input, const Reduction& red) {
  return reducing(red, [output, input, dt = red.dt](oxcclComm_t c, oxcclRedOp_t op) {
    check(api().oxcclReduceScatter(input.data_ptr(), output.data_ptr(), count(output), dt, op, c),
          "reduce_scatter", c);
  });
}

void checkSingleSizes(const at::Tensor& big, const at::Tensor& small, int size, const char* op) {
  TORCH_CHECK_TYPE(big.scalar_type() == small.scalar_type(), "oxccl: ", op, ": tensors of ",
                   big.scalar_type(), " and ", small.scalar_type(), " mixed");
  TORCH_CHECK_VALUE(big.numel() == small.numel() * size, "oxccl: ", op, ": the large tensor has ",
                    big.numel(), " elements, not ", size, " x ", small.numel());
}

// Element counts and displacements of all_to_all_single's split sizes (in rows of dim 0),
// in bytes.
void splits(const at::Tensor& t, const std::vector<int64_t>& s, int size, const char* which,
            std::vector<size_t>& counts, std::vector<size_t>& displs) {
  const int64_t rows = t.dim() > 0 ? t.size(0) : 1;
  const size_t rowBytes = rows > 0 ? bytes(t) / rows : 0;
  counts.assign(size, 0);
  displs.assign(size, 0);
  if (s.empty()) {
    TORCH_CHECK_VALUE(rows % size == 0, "oxccl: all_to_all_single: the ", which,
                      " tensor's first dimension (", rows, ") does not divide by ", size,
                      " ranks; pass split sizes");
    for (int i = 0; i < size; i++) {
      counts[i] = rowBytes * (rows / size);
      displs[i] = counts[i] * i;
    }
    return;
  }
  TORCH_CHECK_VALUE(static_cast<int>(s.size()) == size, "oxccl: all_to_all_single: ", s.size(),
                    " ", which, " split sizes for ", size, " ranks");
  int64_t sum = 0;
  for (int i = 0; i < size; i++) {
    TORCH_CHECK_VALUE(s[i] >= 0, "oxccl: all_to_all_single: negative split size");
    counts[i] = rowBytes * s[i];
    displs[i] = rowBytes * sum;
    sum += s[i];
  }
  TORCH_CHECK_VALUE(sum == rows, "oxccl: all_to_all_single: the ", which, " split sizes add up to ",
                    sum, ", not the first dimension ", rows);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

c10::intrusive_ptr<c10d::Work> OxcclBackend::broadcast(std::vector<at::Tensor>& tensors,
                                                       const c10d::BroadcastOptions& opts) {
  at::Tensor t = single(tensors, "broadcast");
  checkRank(opts.rootRank, size_, "broadcast", "root");
  TORCH_CHECK_VALUE(opts.rootTensor == 0, "oxccl: broadcast: rootTensor must be 0");
  int root = static_cast<int>(opts.rootRank);
  Op o;
  o.call = [t, root](oxcclComm_t c) {
    check(api().oxcclBroadcast(t.data_ptr(), t.data_ptr(), bytes(t), oxcclUint8, root, c),
          "broadcast", c);
  };
  return enqueue(OpType::BROADCAST, "oxccl:broadcast", {o}, {t}, false, opts.timeout);
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::allreduce(std::vector<at::Tensor>& tensors,
                                                       const c10d::AllreduceOptions& opts) {
  TORCH_CHECK_VALUE(!opts.sparseIndices.has_value(), "oxccl: sparse allreduce is not supported");
  at::Tensor t = single(tensors, "allreduce");
  Reduction red = reduction(opts.reduceOp, t.scalar_type(), "allreduce");
  Op o = reducing(red, [t, dt = red.dt](oxcclComm_t c, oxcclRedOp_t op) {
    check(api().oxcclAllReduce(t.data_ptr(), t.data_ptr(), count(t), dt, op, c), "allreduce", c);
  });
  return enqueue(OpType::ALLREDUCE, "oxccl:all_reduce", {o}, {t}, false, opts.timeout);
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::allreduce_coalesced(
    std::vector<at::Tensor>& tensors, const c10d::AllreduceCoalescedOptions& opts) {
  std::vector<Op> ops;
  for (auto& t : tensors) {
    checkTensor(t, "allreduce_coalesced");
    Reduction red = reduction(opts.reduceOp, t.scalar_type(), "allreduce_coalesced");
    ops.push_back(reducing(red, [t, dt = red.dt](oxcclComm_t c, oxcclRedOp_t op) {
      check(api().oxcclAllReduce(t.data_ptr(), t.data_ptr(), count(t), dt, op, c),
            "allreduce_coalesced", c);
    }));
  }
  return enqueue(OpType::ALLREDUCE_COALESCED, "oxccl:all_reduce_coalesced", std::move(ops),
                 tensors, true, opts.timeout);
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::reduce(std::vector<at::Tensor>& tensors,
                                                    const c10d::ReduceOptions& opts) {
  at::Tensor t = single(tensors, "reduce");
  checkRank(opts.rootRank, size_, "reduce", "root");
  TORCH_CHECK_VALUE(opts.rootTensor == 0, "oxccl: reduce: rootTensor must be 0");
  Reduction red = reduction(opts.reduceOp, t.scalar_type(), "reduce");
  int root = static_cast<int>(opts.rootRank);
  Op o = reducing(red, [t, root, dt = red.dt](oxcclComm_t c, oxcclRedOp_t op) {
    check(api().oxcclReduce(t.data_ptr(), t.data_ptr(), count(t), dt, op, root, c), "reduce", c);
  });
  return enqueue(OpType::REDUCE, "oxccl:reduce", {o}, {t}, false, opts.timeout);
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::allgather(
    std::vector<std::vector<at::Tensor>>& outputs, std::vector<at::Tensor>& inputs,
    const c10d::AllgatherOptions& opts) {
  at::Tensor in = single(inputs, "allgather");
  TORCH_CHECK_VALUE(outputs.size() == 1, "oxccl: allgather takes one output list, not ",
                    outputs.size());
  Op o = allGatherListOp(outputs[0], in, size_, "allgather");
  return enqueue(OpType::ALLGATHER, "oxccl:all_gather", {o}, outputs[0], false, opts.timeout);
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::all_gather_single(at::Tensor& output,
                                                               at::Tensor& input,
                                                               const c10d::AllgatherOptions& opts) {
  checkTensor(output, "all_gather_into_tensor");
  checkTensor(input, "all_gather_into_tensor");
  checkSingleSizes(output, input, size_, "all_gather_into_tensor");
  return enqueue(OpType::_ALLGATHER_BASE, "oxccl:all_gather_into_tensor",
                 {allGatherOp(output, input)}, {output}, false, opts.timeout);
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::_allgather_base(at::Tensor& output,
                                                             at::Tensor& input,
                                                             const c10d::AllgatherOptions& opts) {
  return all_gather_single(output, input, opts);
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::allgather_coalesced(
    std::vector<std::vector<at::Tensor>>& outputLists, std::vector<at::Tensor>& inputs,
    const c10d::AllgatherOptions& opts) {
  // As torch documents it and gloo implements it: one output list per rank, each holding
  // that rank's copy of every input.
  TORCH_CHECK_VALUE(static_cast<int>(outputLists.size()) == size_,
                    "oxccl: allgather_coalesced: ", outputLists.size(),
                    " output lists for ", size_, " ranks (one list per rank)");
  for (size_t r = 0; r < outputLists.size(); r++) {
    TORCH_CHECK_VALUE(outputLists[r].size() == inputs.size(), "oxccl: allgather_coalesced: ",
                      "the output list of rank ", r, " has ", outputLists[r].size(),
                      " tensors for ", inputs.size(), " inputs");
  }
  std::vector<Op> ops;
  std::vector<at::Tensor> all;
  for (size_t i = 0; i < inputs.size(); i++) {
    checkTensor(inputs[i], "allgather_coalesced");
    std::vector<at::Tensor> perRank;
    for (const auto& list : outputLists) {
      perRank.push_back(list[i]);
    }
    ops.push_back(allGatherListOp(perRank, inputs[i], size_, "allgather_coalesced"));
    all.insert(all.end(), perRank.begin(), perRank.end());
  }
  return enqueue(OpType::ALLGATHER_COALESCED, "oxccl:all_gather_coalesced", std::move(ops), all,
                 true, opts.timeout);
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::all_gather_single_coalesced(
    std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
    const c10d::AllgatherOptions& opts) {
  TORCH_CHECK_VALUE(outputs.size() == inputs.size(), "oxccl: all_gather_into_tensor_coalesced: ",
                    outputs.size(), " outputs for ", inputs.size(), " inputs");
  std::vector<Op> ops;
  for (size_t i = 0; i < inputs.size(); i++) {
    checkTensor(outputs[i], "all_gather_into_tensor_coalesced");
    checkTensor(inputs[i], "all_gather_into_tensor_coalesced");
    checkSingleSizes(outputs[i], inputs[i], size_, "all_gather_into_tensor_coalesced");
    ops.push_back(allGatherOp(outputs[i], inputs[i]));
  }
  return enqueue(OpType::ALLGATHER_INTO_TENSOR_COALESCED,
                 "oxccl:all_gather_into_tensor_coalesced", std::move(ops), outputs, true,
                 opts.timeout);
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::allgather_into_tensor_coalesced(
    std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
    const c10d::AllgatherOptions& opts) {
  return all_gather_single_coalesced(outputs, inputs, opts);
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::gather(std::vector<std::vector<at::Tensor>>& outputs,
                                                    std::vector<at::Tensor>& inputs,
                                                    const c10d::GatherOptions& opts) {
  at::Tensor in = single(inputs, "gather");
  checkRank(opts.rootRank, size_, "gather", "root");
  int root = static_cast<int>(opts.rootRank);
  std::vector<at::Tensor> outs;
  at::Tensor buf;
  if (rank_ == root) {
    TORCH_CHECK_VALUE(outputs.size() == 1, "oxccl: gather: the root takes one output list");
    outs = outputs[0];
    TORCH_CHECK_VALUE(static_cast<int>(outs.size()) == size_, "oxccl: gather: ", outs.size(),
                      " output tensors for ", size_, " ranks");
    checkTensors(outs, in, "gather");
    for (const auto& t : outs) {
      TORCH_CHECK_VALUE(t.numel() == in.numel(), "oxccl: gather: output of ", t.numel(),
                        " elements for an input of ", in.numel());
    }
    buf = packed(bytes(in) * size_);
  } else {
    TORCH_CHECK_VALUE(outputs.empty() || outputs[0].empty(),
                      "oxccl: gather: only the root passes output tensors");
  }
  Op o;
  o.call = [in, buf, root](oxcclComm_t c) {
    check(api().oxcclGather(in.data_ptr(), buf.defined() ? buf.data_ptr() : nullptr, bytes(in),
                            oxcclUint8, root, c),
          "gather", c);
  };
  if (buf.defined()) o.post = [buf, outs](oxcclComm_t) { unpack(buf, outs); };
  return enqueue(OpType::GATHER, "oxccl:gather", {o}, outs, false, opts.timeout);
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::gather_single(at::Tensor& output, at::Tensor& input,
                                                           const c10d::GatherOptions& opts) {
  checkTensor(input, "gather_into_tensor");
  checkRank(opts.rootRank, size_, "gather_into_tensor", "root");
  int root = static_cast<int>(opts.rootRank);
  at::Tensor out;
  if (rank_ == root) {
    checkTensor(output, "gather_into_tensor");
    checkSingleSizes(output, input, size_, "gather_into_tensor");
    out = output;
  }
  Op o;
  o.call = [input, out, root](oxcclComm_t c) {
    check(api().oxcclGather(input.data_ptr(), out.defined() ? out.data_ptr() : nullptr,
                            bytes(input), oxcclUint8, root, c),
          "gather", c);
  };
  std::vector<at::Tensor> outs;
  if (out.defined()) outs.push_back(out);
  return enqueue(OpType::GATHER, "oxccl:gather_into_tensor", {o}, outs, false, opts.timeout);
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::gather_into_tensor(
    at::Tensor& output, at::Tensor& input, const c10d::GatherOptions& opts) {
  return gather_single(output, input, opts);
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::scatter(std::vector<at::Tensor>& outputs,
                                                     std::vector<std::vector<at::Tensor>>& inputs,
                                                     const c10d::ScatterOptions& opts) {
  at::Tensor out = single(outputs, "scatter");
  checkRank(opts.rootRank, size_, "scatter", "root");
  int root = static_cast<int>(opts.rootRank);
  std::vector<at::Tensor> ins;
  at::Tensor buf;
  if (rank_ == root) {
    TORCH_CHECK_VALUE(inputs.size() == 1, "oxccl: scatter: the root takes one input list");
    ins = inputs[0];
    TORCH_CHECK_VALUE(static_cast<int>(ins.size()) == size_, "oxccl: scatter: ", ins.size(),
                      " input tensors for ", size_, " ranks");
    checkTensors(ins, out, "scatter");
    for (const auto& t : ins) {
      TORCH_CHECK_VALUE(t.numel() == out.numel(), "oxccl: scatter: input of ", t.numel(),
                        " elements for an output of ", out.numel());
    }
    buf = packed(bytes(out) * size_);
  } else {
    TORCH_CHECK_VALUE(inputs.empty() || inputs[0].empty(),
                      "oxccl: scatter: only the root passes input tensors");
  }
  Op o;
  if (buf.defined()) o.pre = [buf, ins](oxcclComm_t) { pack(ins, buf); };
  o.call = [out, buf, root](oxcclComm_t c) {
    check(api().oxcclScatter(buf.defined() ? buf.data_ptr() : nullptr, out.data_ptr(), bytes(out),
                             oxcclUint8, root, c),
          "scatter", c);
  };
  return enqueue(OpType::SCATTER, "oxccl:scatter", {o}, {out}, false, opts.timeout);
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::reduce_scatter(
    std::vector<at::Tensor>& outputs, std::vector<std::vector<at::Tensor>>& inputs,
    const c10d::ReduceScatterOptions& opts) {
  at::Tensor out = single(outputs, "reduce_scatter");
  TORCH_CHECK_VALUE(inputs.size() == 1, "oxccl: reduce_scatter takes one input list");
  std::vector<at::Tensor> ins = inputs[0];
  TORCH_CHECK_VALUE(static_cast<int>(ins.size()) == size_, "oxccl: reduce_scatter: ", ins.size(),
                    " input tensors for ", size_, " ranks");
  checkTensors(ins, out, "reduce_scatter");
  TORCH_CHECK_VALUE(ins[rank_].numel() == out.numel(), "oxccl: reduce_scatter: the output has ",
                    out.numel(), " elements but this rank's input block ", ins[rank_].numel());
  Reduction red = reduction(opts.reduceOp, out.scalar_type(), "reduce_scatter");
  auto counts = std::make_shared<std::vector<size_t>>();
  bool even = true;
  for (const auto& t : ins) {
    counts->push_back(count(t));
    even = even && count(t) == count(out);
  }
  at::Tensor buf = packed(totalBytes(ins));
  Op o = reducing(red, [out, buf, counts, even, dt = red.dt](oxcclComm_t c, oxcclRedOp_t op) {
    if (even) {
      check(api().oxcclReduceScatter(buf.data_ptr(), out.data_ptr(), count(out), dt, op, c),
            "reduce_scatter", c);
    } else {
      check(api().oxcclReduceScatterv(buf.data_ptr(), out.data_ptr(), counts->data(), dt, op, c),
            "reduce_scatter (uneven)", c);
    }
  });
  auto prior = o.pre;
  o.pre = [prior, buf, ins](oxcclComm_t c) {
    pack(ins, buf);
    if (prior) prior(c);
  };
  return enqueue(OpType::REDUCE_SCATTER, "oxccl:reduce_scatter", {o}, {out}, false, opts.timeout);
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::reduce_scatter_single(
    at::Tensor& output, at::Tensor& input, const c10d::ReduceScatterOptions& opts) {
  checkTensor(output, "reduce_scatter_tensor");
  checkTensor(input, "reduce_scatter_tensor");
  checkSingleSizes(input, output, size_, "reduce_scatter_tensor");
  Reduction red = reduction(opts.reduceOp, output.scalar_type(), "reduce_scatter_tensor");
  return enqueue(OpType::_REDUCE_SCATTER_BASE, "oxccl:reduce_scatter_tensor",
                 {reduceScatterOp(output, input, red)}, {output}, false, opts.timeout);
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::_reduce_scatter_base(
    at::Tensor& output, at::Tensor& input, const c10d::ReduceScatterOptions& opts) {
  return reduce_scatter_single(output, input, opts);
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::reduce_scatter_single_coalesced(
    std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
    const c10d::ReduceScatterOptions& opts) {
  TORCH_CHECK_VALUE(outputs.size() == inputs.size(), "oxccl: reduce_scatter_tensor_coalesced: ",
                    outputs.size(), " outputs for ", inputs.size(), " inputs");
  std::vector<Op> ops;
  for (size_t i = 0; i < inputs.size(); i++) {
    checkTensor(outputs[i], "reduce_scatter_tensor_coalesced");
    checkTensor(inputs[i], "reduce_scatter_tensor_coalesced");
    checkSingleSizes(inputs[i], outputs[i], size_, "reduce_scatter_tensor_coalesced");
    Reduction red =
        reduction(opts.reduceOp, outputs[i].scalar_type(), "reduce_scatter_tensor_coalesced");
    ops.push_back(reduceScatterOp(outputs[i], inputs[i], red));
  }
  return enqueue(OpType::REDUCE_SCATTER_TENSOR_COALESCED, "oxccl:reduce_scatter_tensor_coalesced",
                 std::move(ops), outputs, true, opts.timeout);
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::reduce_scatter_tensor_coalesced(
    std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
    const c10d::ReduceScatterOptions& opts) {
  return reduce_scatter_single_coalesced(outputs, inputs, opts);
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::all_to_all_single(
    at::Tensor& output, at::Tensor& input, std::vector<int64_t>& outputSplits,
    std::vector<int64_t>& inputSplits, const c10d::AllToAllOptions& opts) {
  checkTensor(output, "all_to_all_single");
  checkTensor(input, "all_to_all_single");
  TORCH_CHECK_TYPE(output.scalar_type() == input.scalar_type(), "oxccl: all_to_all_single: ",
                   "tensors of ", input.scalar_type(), " and ", output.scalar_type(), " mixed");
  Op o;
  if (outputSplits.empty() && inputSplits.empty()) {
    TORCH_CHECK_VALUE(output.numel() == input.numel() && input.numel() % size_ == 0,
                      "oxccl: all_to_all_single: input and output of ", input.numel(), " and ",
                      output.numel(), " elements; without split sizes both must have the same "
                      "size, divisible by ", size_, " ranks");
    size_t block = bytes(input) / size_;
    o.call = [output, input, block](oxcclComm_t c) {
      check(api().oxcclAlltoAll(input.data_ptr(), output.data_ptr(), block, oxcclUint8, c),
            "all_to_all_single", c);
    };
  } else {
    auto v = std::make_shared<Blocks>();
    splits(input, inputSplits, size_, "input", v->sc, v->sd);
    splits(output, outputSplits, size_, "output", v->rc, v->rd);
    o.call = [output, input, v](oxcclComm_t c) {
      check(api().oxcclAlltoAllv(input.data_ptr(), v->sc.data(), v->sd.data(), output.data_ptr(),
                                 v->rc.data(), v->rd.data(), oxcclUint8, c),
            "all_to_all_single", c);
    };
  }
  return enqueue(OpType::ALLTOALL_BASE, "oxccl:all_to_all_single", {o}, {output}, false,
                 opts.timeout);
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::alltoall_base(at::Tensor& output, at::Tensor& input,
                                                           std::vector<int64_t>& outputSplits,
                                                           std::vector<int64_t>& inputSplits,
                                                           const c10d::AllToAllOptions& opts) {
  return all_to_all_single(output, input, outputSplits, inputSplits, opts);
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::alltoall(std::vector<at::Tensor>& outputs,
                                                      std::vector<at::Tensor>& inputs,
                                                      const c10d::AllToAllOptions& opts) {
  TORCH_CHECK_VALUE(static_cast<int>(outputs.size()) == size_ &&
                        static_cast<int>(inputs.size()) == size_,
                    "oxccl: all_to_all: ", inputs.size(), " inputs and ", outputs.size(),
                    " outputs for ", size_, " ranks");
  TORCH_CHECK_VALUE(size_ > 0, "oxccl: all_to_all: empty group");
  checkTensors(inputs, inputs[0], "all_to_all");
  checkTensors(outputs, inputs[0], "all_to_all");
  auto v = std::make_shared<Blocks>();
  size_t off = 0;
  for (const auto& t : inputs) {
    v->sc.push_back(bytes(t));
    v->sd.push_back(off);
    off += bytes(t);
  }
  at::Tensor sendBuf = packed(off);
  off = 0;
  for (const auto& t : outputs) {
    v->rc.push_back(bytes(t));
    v->rd.push_back(off);
    off += bytes(t);
  }
  at::Tensor recvBuf = packed(off);
  std::vector<at::Tensor> ins = inputs, outs = outputs;
  Op o;
  o.pre = [sendBuf, ins](oxcclComm_t) { pack(ins, sendBuf); };
  o.call = [sendBuf, recvBuf, v](oxcclComm_t c) {
    check(api().oxcclAlltoAllv(sendBuf.data_ptr(), v->sc.data(), v->sd.data(), recvBuf.data_ptr(),
                               v->rc.data(), v->rd.data(), oxcclUint8, c),
          "all_to_all", c);
  };
  o.post = [recvBuf, outs](oxcclComm_t) { unpack(recvBuf, outs); };
  return enqueue(OpType::ALLTOALL, "oxccl:all_to_all", {o}, outs, false, opts.timeout);
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::send(std::vector<at::Tensor>& tensors, int dstRank,
                                                  int tag) {
  return p2p(true, tensors, dstRank, tag);
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::recv(std::vector<at::Tensor>& tensors, int srcRank,
                                                  int tag) {
  return p2p(false, tensors, srcRank, tag);
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::recvAnysource(std::vector<at::Tensor>& /*tensors*/,
                                                           int /*tag*/) {
  TORCH_CHECK_NOT_IMPLEMENTED(false,
                              "oxccl: recv from any source is not supported (oxccl matches "
                              "messages by peer); pass src=");
  return {};  // unreachable
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::p2p(bool isSend, std::vector<at::Tensor>& tensors,
                                                 int peer, int tag) {
  const char* name = isSend ? "send" : "recv";
  at::Tensor t = single(tensors, name);
  checkRank(peer, size_, name, "peer");
  TORCH_CHECK_VALUE(peer != rank_, "oxccl: ", name, ": the peer is this rank");
  TORCH_CHECK_VALUE(tag == 0, "oxccl: ", name, ": tag ", tag,
                    " is not supported: oxccl matches the messages between two ranks in the "
                    "order they are issued (use tag=0)");
  TORCH_CHECK(!closed_, "oxccl: ", name, " on a process group that was shut down or aborted");
  if (coalescing_) {
    // Inside a coalescing region (batch_isend_irecv): blocking calls inside one group.
    Op o;
    o.call = [t, peer, isSend](oxcclComm_t c) {
      const Api& a = api();
      oxcclResult_t r = isSend ? a.oxcclSend(t.data_ptr(), bytes(t), oxcclUint8, peer, c)
                               : a.oxcclRecv(t.data_ptr(), bytes(t), oxcclUint8, peer, c);
      check(r, isSend ? "send" : "recv", c);
    };
    return enqueue(isSend ? OpType::SEND : OpType::RECV, isSend ? "oxccl:send" : "oxccl:recv",
                   {o}, {t}, true, kNoTimeout);
  }
  auto work = c10::make_intrusive<OxcclWork>(rank_, isSend ? OpType::SEND : OpType::RECV,
                                             isSend ? "oxccl:send" : "oxccl:recv",
                                             std::vector<at::Tensor>{t}, worker_, true, timeout_,
                                             ++seq_);
  Entry e;
  e.kind = isSend ? Entry::Kind::Send : Entry::Kind::Recv;
  e.tensor = t;
  e.peer = peer;
  e.works.push_back(work);
  worker_->push(std::move(e));
  return work;
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::barrier(const c10d::BarrierOptions& opts) {
  Op o;
  o.call = [](oxcclComm_t c) { check(api().oxcclBarrier(c), "barrier", c); };
  return enqueue(OpType::BARRIER, "oxccl:barrier", {o}, {}, false, opts.timeout);
}

}  // namespace oxccl_torch
