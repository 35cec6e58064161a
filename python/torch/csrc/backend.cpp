// The backend's life cycle (bootstrap, split, abort, shutdown), its worker thread and its
// Work objects. The operations themselves are in collectives.cpp.
#include "backend.hpp"

#include <algorithm>
#include <climits>
#include <cstring>

#include <ATen/core/ivalue.h>
#include <c10/util/Exception.h>

namespace oxccl_torch {

namespace {

constexpr const char* kUniqueIdKey = "oxccl/unique_id";

int timeoutMs(std::chrono::milliseconds t) {
  auto ms = t.count();
  if (ms <= 0) return OXCCL_CONFIG_UNDEF_INT;  // oxccl's default (OXCCL_TIMEOUT)
  return static_cast<int>(std::min<int64_t>(ms, INT_MAX));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// OxcclWork

OxcclWork::OxcclWork(int rank, c10d::OpType type, const char* title,
                     std::vector<at::Tensor> outputs, const std::shared_ptr<Worker>& worker,
                     bool p2p, std::chrono::milliseconds timeout, uint64_t seq)
    : Work(rank, type, title),
      outputs_(std::move(outputs)),
      worker_(worker),
      p2p_(p2p),
      timeout_(timeout),
      seq_(seq),
      future_(c10::make_intrusive<c10::ivalue::Future>(
          c10::ListType::create(c10::TensorType::get()))) {}

void OxcclWork::startP2P() {
  if (!p2p_) return;
  if (auto w = worker_.lock()) w->requestP2P();
}

bool OxcclWork::isCompleted() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (completed_) return true;
  }
  startP2P();  // a test starts deferred sends/receives, as oxcclTest does
  std::lock_guard<std::mutex> lock(mutex_);
  return completed_;
}

bool OxcclWork::wait(std::chrono::milliseconds timeout) {
  startP2P();
  std::unique_lock<std::mutex> lock(mutex_);
  if (timeout == kNoTimeout) {
    cv_.wait(lock, [&] { return completed_; });
  } else if (!cv_.wait_for(lock, timeout, [&] { return completed_; })) {
    C10_THROW_ERROR(DistBackendError,
                    std::string("oxccl: ") + c10d::opTypeToString(opType_) + " (sequence " +
                        std::to_string(seq_) + ") did not finish within " +
                        std::to_string(timeout.count()) + " ms");
  }
  if (exception_) std::rethrow_exception(exception_);
  return true;
}

std::vector<at::Tensor> OxcclWork::result() { return outputs_; }

c10::intrusive_ptr<c10::ivalue::Future> OxcclWork::getFuture() { return future_; }

void OxcclWork::complete(std::exception_ptr e) {
  // The future first (as gloo does), so that whoever wait() wakes finds it settled.
  // Callbacks attached with Future.then (DDP comm hooks) run here, on the worker thread.
  if (e) {
    future_->setError(e);
  } else {
    future_->markCompleted(c10::IValue(outputs_));
  }
  finish(e);
}

// ---------------------------------------------------------------------------------------------
// Worker

Worker::Worker(oxcclComm_t comm, int rank) : comm_(comm), rank_(rank) {}

Worker::~Worker() { stop(); }

void Worker::start() { thread_ = std::thread([this] { loop(); }); }

void Worker::push(Entry e) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    TORCH_CHECK(!stopped_, "oxccl: the process group was shut down or aborted");
    // A queued Flush covers the sends/receives queued before it only.
    if (e.kind == Entry::Kind::Send || e.kind == Entry::Kind::Recv) flushQueued_ = false;
    queue_.push_back(std::move(e));
  }
  cv_.notify_one();
}

void Worker::requestP2P() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_ || flushQueued_) return;
    flushQueued_ = true;
    Entry e;
    e.kind = Entry::Kind::Flush;
    queue_.push_back(std::move(e));
  }
  cv_.notify_one();
}

void Worker::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopped_) {
      stopped_ = true;
      Entry e;
      e.kind = Entry::Kind::Stop;
      queue_.push_back(std::move(e));
    }
  }
  cv_.notify_one();
  if (!thread_.joinable()) return;
  if (thread_.get_id() == std::this_thread::get_id()) {
    thread_.detach();  // the last reference went away in a completion callback
  } else {
    thread_.join();
  }
}

void Worker::loop() {
  for (;;) {
    Entry e;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return !queue_.empty(); });
      e = std::move(queue_.front());
      queue_.pop_front();
      if (e.kind == Entry::Kind::Flush) flushQueued_ = false;
    }
    switch (e.kind) {
      case Entry::Kind::Stop:
        finishP2P();
        return;
      case Entry::Kind::Flush:
        finishP2P();
        break;
      case Entry::Kind::Send:
      case Entry::Kind::Recv: {
        const Api& a = api();
        oxcclRequest_t req = nullptr;
        size_t n = e.tensor.nbytes();
        oxcclResult_t r =
            e.kind == Entry::Kind::Send
                ? a.oxcclSendAsync(e.tensor.data_ptr(), n, oxcclUint8, e.peer, comm_, &req)
                : a.oxcclRecvAsync(e.tensor.data_ptr(), n, oxcclUint8, e.peer, comm_, &req);
        if (r != oxcclSuccess) {
          std::exception_ptr ex;
          try {
            check(r, e.kind == Entry::Kind::Send ? "send" : "recv", comm_);
          } catch (...) {
            ex = std::current_exception();
          }
          for (auto& w : e.works) w->complete(ex);
        } else {
          p2p_.emplace_back(req, e.works.at(0));
        }
        break;
      }
      case Entry::Kind::Run:
        finishP2P();
        run(e);
        break;
    }
  }
}

void Worker::finishP2P() {
  // The first wait starts every deferred send and receive together.
  for (auto& [req, work] : p2p_) {
    std::exception_ptr ex;
    try {
      check(api().oxcclWait(req), "send/recv", comm_);
    } catch (...) {
      ex = std::current_exception();
    }
    work->complete(ex);
  }
  p2p_.clear();
}

void Worker::run(Entry& e) {
  std::exception_ptr ex;
  try {
    for (auto& op : e.ops) {
      if (op.pre) op.pre(comm_);
    }
    if (e.group) {
      const Api& a = api();
      check(a.oxcclGroupStart(), "group start", comm_);
      std::exception_ptr inner;
      try {
        for (auto& op : e.ops) op.call(comm_);
      } catch (...) {
        inner = std::current_exception();
      }
      // Close the group even when a call was refused, so that this thread's next group starts
      // clean; the refused call's error wins.
      oxcclResult_t r = a.oxcclGroupEnd();
      if (inner) std::rethrow_exception(inner);
      check(r, "coalesced operations", comm_);
    } else {
      for (auto& op : e.ops) op.call(comm_);
    }
    for (auto& op : e.ops) {
      if (op.post) op.post(comm_);
    }
  } catch (...) {
    ex = std::current_exception();
  }
  // Release what the closures hold (tensors, pre-multiplied-sum ops) before the works
  // complete, so a waiter sees a quiescent entry.
  e.ops.clear();
  for (auto& w : e.works) w->complete(ex);
}

// ---------------------------------------------------------------------------------------------
// OxcclBackend: life cycle

OxcclBackend::OxcclBackend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                           std::chrono::milliseconds timeout, std::string name)
    : Backend(rank, size), timeout_(timeout), name_(std::move(name)) {
  const Api& a = api();
  oxcclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (rank == 0) {
    check(a.oxcclGetUniqueId(&id), "get unique id", nullptr);
    std::vector<uint8_t> bytes(sizeof(id.internal));
    std::memcpy(bytes.data(), id.internal, bytes.size());
    store->set(kUniqueIdKey, bytes);
  } else {
    std::vector<uint8_t> bytes = store->get(kUniqueIdKey);
    TORCH_CHECK(bytes.size() == sizeof(id.internal), "oxccl: the store's unique id has ",
                bytes.size(), " bytes, not ", sizeof(id.internal));
    std::memcpy(id.internal, bytes.data(), bytes.size());
  }
  oxcclConfig_t cfg = OXCCL_CONFIG_INITIALIZER;
  cfg.timeoutMs = timeoutMs(timeout);
  cfg.commName = name_.empty() ? nullptr : name_.c_str();
  oxcclComm_t comm = nullptr;
  check(a.oxcclCommInitRankConfig(&comm, size, id, rank, &cfg), "communicator init", nullptr);
  init(comm);
}

OxcclBackend::OxcclBackend(oxcclComm_t comm, int rank, int size,
                           std::chrono::milliseconds timeout, std::string name)
    : Backend(rank, size), timeout_(timeout), name_(std::move(name)) {
  init(comm);
}

void OxcclBackend::init(oxcclComm_t comm) {
  comm_ = comm;
  worker_ = std::make_shared<Worker>(comm, rank_);
  worker_->start();
  Backend::init();
}

OxcclBackend::~OxcclBackend() {
  try {
    shutdown();
  } catch (...) {  // never throw from a destructor (it may run at interpreter exit)
  }
}

void OxcclBackend::shutdown() {
  if (closed_) return;
  closed_ = true;
  if (worker_) worker_->stop();  // lets queued operations finish
  if (comm_ != nullptr && !aborted_.load()) api().oxcclCommDestroy(comm_);
  comm_ = nullptr;
}

void OxcclBackend::abort() {
  if (closed_ || aborted_.exchange(true)) return;
  // From any thread: blocked and queued calls fail promptly, peers get oxcclRemoteError.
  api().oxcclCommAbort(comm_);
  closed_ = true;
  if (worker_) worker_->stop();
  comm_ = nullptr;
}

c10d::ErrorType OxcclBackend::getError() {
  if (aborted_.load()) return c10d::ErrorType::COMM_ERROR;
  if (comm_ == nullptr) return c10d::ErrorType::SUCCESS;
  oxcclResult_t r = oxcclSuccess;
  if (api().oxcclCommGetAsyncError(comm_, &r) != oxcclSuccess) return c10d::ErrorType::COMM_ERROR;
  switch (r) {
    case oxcclSuccess: return c10d::ErrorType::SUCCESS;
    case oxcclTimeout: return c10d::ErrorType::TIMEOUT;
    case oxcclRemoteError: return c10d::ErrorType::REMOTE_ERROR;
    default: return c10d::ErrorType::COMM_ERROR;
  }
}

c10::intrusive_ptr<c10d::Backend::Options> OxcclBackend::getBackendOptions() {
  auto o = c10::make_intrusive<Backend::Options>("oxccl", timeout_);
  o->group_name = name_;
  return o;
}

c10::intrusive_ptr<c10d::Backend> OxcclBackend::split(
    const c10::intrusive_ptr<c10d::Store>& /* store: oxcclCommSplit needs none */,
    const std::vector<int>& ranks, const c10::intrusive_ptr<Backend::Options>& opts) {
  auto it = std::find(ranks.begin(), ranks.end(), rank_);
  const bool member = it != ranks.end();
  // Disjoint groups have distinct smallest ranks: that is the colour. The key is the place in
  // `ranks`, which torch makes the new group rank.
  const int color = member ? *std::min_element(ranks.begin(), ranks.end()) : OXCCL_SPLIT_NOCOLOR;
  const int key = member ? static_cast<int>(it - ranks.begin()) : 0;
  auto timeout = opts ? opts->timeout : timeout_;
  auto name = std::make_shared<std::string>(opts ? opts->group_name : name_ + ":split");
  auto newcomm = std::make_shared<oxcclComm_t>(nullptr);
  Op op;
  op.call = [=](oxcclComm_t c) {
    oxcclConfig_t cfg = OXCCL_CONFIG_INITIALIZER;
    cfg.timeoutMs = timeoutMs(timeout);
    cfg.commName = name->empty() ? nullptr : name->c_str();
    check(api().oxcclCommSplit(c, color, key, newcomm.get(), &cfg), "split", c);
  };
  TORCH_CHECK(!coalescing_, "oxccl: split inside a coalescing region");
  // Collective over this communicator: it runs on the worker, in order with the others.
  std::vector<Op> ops;
  ops.push_back(std::move(op));
  auto work = enqueue(c10d::OpType::UNKNOWN, "oxccl:split", std::move(ops), {}, false,
                      kNoTimeout);
  work->wait(kNoTimeout);
  if (!member || *newcomm == nullptr) return nullptr;
  auto b = c10::make_intrusive<OxcclBackend>(*newcomm, key, static_cast<int>(ranks.size()),
                                             timeout, *name);
  return b;
}

// ---------------------------------------------------------------------------------------------
// OxcclBackend: queueing

std::chrono::milliseconds OxcclBackend::opTimeout(std::chrono::milliseconds t) const {
  return t.count() > 0 ? t : timeout_;
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::enqueue(c10d::OpType type, const char* title,
                                                     std::vector<Op> ops,
                                                     std::vector<at::Tensor> outputs, bool group,
                                                     std::chrono::milliseconds timeout) {
  TORCH_CHECK(!closed_, "oxccl: ", title, " on a process group that was shut down or aborted");
  auto work = c10::make_intrusive<OxcclWork>(rank_, type, title, std::move(outputs), worker_,
                                             false, opTimeout(timeout), ++seq_);
  if (coalescing_) {
    for (auto& op : ops) coalescedOps_.push_back(std::move(op));
    coalescedWorks_.push_back(work);
    return work;
  }
  Entry e;
  e.kind = Entry::Kind::Run;
  e.ops = std::move(ops);
  e.group = group;
  e.works.push_back(work);
  worker_->push(std::move(e));
  return work;
}

void OxcclBackend::startCoalescing() {
  TORCH_CHECK(!coalescing_, "oxccl: startCoalescing inside a coalescing region");
  coalescing_ = true;
  coalescedOps_.clear();
  coalescedWorks_.clear();
}

c10::intrusive_ptr<c10d::Work> OxcclBackend::endCoalescing() {
  TORCH_CHECK(coalescing_, "oxccl: endCoalescing without startCoalescing");
  coalescing_ = false;
  std::vector<at::Tensor> outputs;
  for (auto& w : coalescedWorks_) {
    for (auto& t : w->result()) outputs.push_back(t);
  }
  auto work = c10::make_intrusive<OxcclWork>(rank_, c10d::OpType::COALESCED, "oxccl:coalesced",
                                             outputs, worker_, false, timeout_, ++seq_);
  Entry e;
  e.kind = Entry::Kind::Run;
  e.ops = std::move(coalescedOps_);
  e.group = true;
  e.works = std::move(coalescedWorks_);
  e.works.push_back(work);
  coalescedOps_.clear();
  coalescedWorks_.clear();
  if (e.ops.empty()) {
    for (auto& w : e.works) w->complete(nullptr);
    return work;
  }
  worker_->push(std::move(e));
  return work;
}

}  // namespace oxccl_torch
