// c10d::Backend over liboxccl's C ABI (CPU tensors).
//
// Threading: the calling thread checks arguments and queues each operation; one worker thread
// per backend runs them in the order issued (the order every rank agrees on) with oxccl's
// blocking calls, then completes the Work and its Future. Sends and receives outside a
// coalescing region are started with oxcclSendAsync/oxcclRecvAsync, which oxccl defers and
// starts together, and are finished (oxcclWait) when any of them is waited on or tested, or
// before the next collective: so the usual isend/irecv pairs cannot deadlock. Ops between
// startCoalescing and endCoalescing, and allreduce_coalesced & co., run inside one
// oxcclGroupStart/oxcclGroupEnd.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include "api.h"

namespace oxccl_torch {

class Worker;

// The Work of one operation, completed by the worker thread.
class OxcclWork : public c10d::Work {
 public:
  OxcclWork(int rank, c10d::OpType type, const char* title, std::vector<at::Tensor> outputs,
            const std::shared_ptr<Worker>& worker, bool p2p, std::chrono::milliseconds timeout,
            uint64_t seq);

  bool isCompleted() override;
  bool wait(std::chrono::milliseconds timeout) override;
  std::vector<at::Tensor> result() override;
  c10::intrusive_ptr<c10::ivalue::Future> getFuture() override;
  std::chrono::milliseconds getTimeout() const override { return timeout_; }
  uint64_t getSequencenumber() const override { return seq_; }

  // Worker thread: marks the work done (failed when `e` is set) and settles the future.
  void complete(std::exception_ptr e);

 private:
  void startP2P();

  std::vector<at::Tensor> outputs_;
  std::weak_ptr<Worker> worker_;
  bool p2p_;
  std::chrono::milliseconds timeout_;
  uint64_t seq_;
  c10::intrusive_ptr<c10::ivalue::Future> future_;
};

using WorkPtr = c10::intrusive_ptr<OxcclWork>;

// One operation as the worker runs it: `pre` before the group opens (allocate, pack, create
// a pre-multiplied-sum op), `call` the oxccl calls (inside oxcclGroupStart/End when grouped),
// `post` after they succeeded (unpack). Closures own what they need (tensors, counts).
struct Op {
  std::function<void(oxcclComm_t)> pre;
  std::function<void(oxcclComm_t)> call;
  std::function<void(oxcclComm_t)> post;
};

struct Entry {
  enum class Kind { Run, Send, Recv, Flush, Stop };
  Kind kind = Kind::Run;
  std::vector<Op> ops;  // Run
  bool group = false;   // Run: inside oxcclGroupStart/End
  at::Tensor tensor;    // Send/Recv
  int peer = -1;        // Send/Recv
  std::vector<WorkPtr> works;
};

// The backend's thread and its queue.
class Worker {
 public:
  Worker(oxcclComm_t comm, int rank);
  ~Worker();
  void start();
  // Queues an entry; throws if the worker was stopped.
  void push(Entry e);
  // Asks the worker to start and finish the sends and receives queued so far.
  void requestP2P();
  // Runs what is queued, then ends the thread (returns at once on the worker thread itself).
  void stop();
  oxcclComm_t comm() const { return comm_; }

 private:
  void loop();
  void run(Entry& e);
  void finishP2P();

  oxcclComm_t comm_;
  int rank_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Entry> queue_;
  bool stopped_ = false;
  // A Flush entry is queued behind every queued send/receive (under mu_): repeated tests
  // (is_completed in a loop) do not pile entries up.
  bool flushQueued_ = false;
  std::thread thread_;
  // Sends/receives started with oxccl...Async and not yet waited on (worker thread only).
  std::vector<std::pair<oxcclRequest_t, WorkPtr>> p2p_;
};

class OxcclBackend : public c10d::Backend {
 public:
  // Joins a new communicator of `size` ranks: rank 0 makes the unique id and publishes it in
  // `store` (private to the group), the others read it.
  OxcclBackend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
               std::chrono::milliseconds timeout, std::string name);
  // Wraps a communicator made by oxcclCommSplit.
  OxcclBackend(oxcclComm_t comm, int rank, int size, std::chrono::milliseconds timeout,
               std::string name);
  ~OxcclBackend() override;

  const std::string getBackendName() const override { return "oxccl"; }
  c10::intrusive_ptr<Backend::Options> getBackendOptions() override;
  bool supportsSplitting() const override { return true; }
  bool supportsCoalescing() const override { return true; }
  void startCoalescing() override;
  c10::intrusive_ptr<c10d::Work> endCoalescing() override;
  c10::intrusive_ptr<Backend> split(const c10::intrusive_ptr<c10d::Store>& store,
                                    const std::vector<int>& ranks,
                                    const c10::intrusive_ptr<Backend::Options>& opts) override;
  void abort() override;
  void shutdown() override;
  c10d::ErrorType getError() override;
  uint64_t getSequenceNumberForGroup() override { return seq_.load(); }

  c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor>& tensors,
                                           const c10d::BroadcastOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor>& tensors,
                                           const c10d::AllreduceOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> allreduce_coalesced(
      std::vector<at::Tensor>& tensors, const c10d::AllreduceCoalescedOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> reduce(std::vector<at::Tensor>& tensors,
                                        const c10d::ReduceOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> allgather(std::vector<std::vector<at::Tensor>>& outputs,
                                           std::vector<at::Tensor>& inputs,
                                           const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> all_gather_single(at::Tensor& output, at::Tensor& input,
                                                   const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> _allgather_base(at::Tensor& output, at::Tensor& input,
                                                 const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> allgather_coalesced(
      std::vector<std::vector<at::Tensor>>& outputLists, std::vector<at::Tensor>& inputs,
      const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> all_gather_single_coalesced(
      std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
      const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> allgather_into_tensor_coalesced(
      std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
      const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> gather(std::vector<std::vector<at::Tensor>>& outputs,
                                        std::vector<at::Tensor>& inputs,
                                        const c10d::GatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> gather_single(at::Tensor& output, at::Tensor& input,
                                               const c10d::GatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> gather_into_tensor(at::Tensor& output, at::Tensor& input,
                                                    const c10d::GatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> scatter(std::vector<at::Tensor>& outputs,
                                         std::vector<std::vector<at::Tensor>>& inputs,
                                         const c10d::ScatterOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> reduce_scatter(std::vector<at::Tensor>& outputs,
                                                std::vector<std::vector<at::Tensor>>& inputs,
                                                const c10d::ReduceScatterOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> reduce_scatter_single(
      at::Tensor& output, at::Tensor& input, const c10d::ReduceScatterOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> _reduce_scatter_base(
      at::Tensor& output, at::Tensor& input, const c10d::ReduceScatterOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> reduce_scatter_single_coalesced(
      std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
      const c10d::ReduceScatterOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> reduce_scatter_tensor_coalesced(
      std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
      const c10d::ReduceScatterOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> all_to_all_single(at::Tensor& output, at::Tensor& input,
                                                   std::vector<int64_t>& outputSplits,
                                                   std::vector<int64_t>& inputSplits,
                                                   const c10d::AllToAllOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> alltoall_base(at::Tensor& output, at::Tensor& input,
                                               std::vector<int64_t>& outputSplits,
                                               std::vector<int64_t>& inputSplits,
                                               const c10d::AllToAllOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> alltoall(std::vector<at::Tensor>& outputs,
                                          std::vector<at::Tensor>& inputs,
                                          const c10d::AllToAllOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> send(std::vector<at::Tensor>& tensors, int dstRank,
                                      int tag) override;
  c10::intrusive_ptr<c10d::Work> recv(std::vector<at::Tensor>& tensors, int srcRank,
                                      int tag) override;
  c10::intrusive_ptr<c10d::Work> recvAnysource(std::vector<at::Tensor>& tensors,
                                               int tag) override;
  c10::intrusive_ptr<c10d::Work> barrier(const c10d::BarrierOptions& opts) override;

  // The communicator handle (for tests and diagnostics).
  oxcclComm_t comm() const { return comm_; }

 private:
  void init(oxcclComm_t comm);
  // Queues `ops` (one group when `group`) as one entry, or adds them to the open coalescing
  // region; returns the work that completes with them.
  c10::intrusive_ptr<c10d::Work> enqueue(c10d::OpType type, const char* title, std::vector<Op> ops,
                                         std::vector<at::Tensor> outputs, bool group,
                                         std::chrono::milliseconds timeout);
  c10::intrusive_ptr<c10d::Work> p2p(bool isSend, std::vector<at::Tensor>& tensors, int peer,
                                     int tag);
  std::chrono::milliseconds opTimeout(std::chrono::milliseconds t) const;

  oxcclComm_t comm_ = nullptr;
  std::shared_ptr<Worker> worker_;
  std::chrono::milliseconds timeout_;
  std::string name_;
  // Operations issued; atomic because completion callbacks (DDP comm hooks) may issue from
  // the worker thread.
  std::atomic<uint64_t> seq_{0};
  bool closed_ = false;
  std::atomic<bool> aborted_{false};
  bool coalescing_ = false;
  std::vector<Op> coalescedOps_;
  std::vector<WorkPtr> coalescedWorks_;
};

}  // namespace oxccl_torch
