// TensorFlow kernel shim for KdKafkaDataset.
//
// This file only translates between TensorFlow (tensors, statuses,
// checkpoints, cancellation) and the C ABI in kafka_dataset.h. Everything
// about Kafka (parsing, consuming, merging, state encoding) lives in the Rust
// core; strings are passed through untouched.
//
// Shaped like TensorFlow's own tf_record_dataset_op.{h,cc}.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "kafka_dataset.h"
#include "tensorflow/core/framework/attr_value.pb.h"
#include "tensorflow/core/framework/cancellation.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/dataset.h"
#include "tensorflow/core/framework/metrics.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/partial_tensor_shape.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/framework/types.h"
#include "tensorflow/core/platform/mutex.h"
#include "tensorflow/core/platform/thread_annotations.h"
#include "tensorflow/core/platform/tstring.h"

// The TensorFlow version this library was compiled against, as bytes the
// Python loader finds in the file before loading it: a library built for
// another TensorFlow minor version fails to load with an unreadable symbol
// error, or worse. `retain` (and a read in KafkaDatasetOp) keeps the linker
// from dropping it.
extern "C" __attribute__((used, retain)) const char kd_built_for_tensorflow[] =
    "KAFKA_DATASET_BUILT_FOR_TENSORFLOW=" KD_BUILT_FOR_TF;

namespace tensorflow {
namespace data {
namespace kafka_dataset {

// The one place where a core error becomes a TensorFlow status. Takes
// ownership of `err` (NULL means success).
absl::Status ToStatus(kd_error* err) {
  if (err == nullptr) return absl::OkStatus();
  const kd_str message_view = kd_error_message(err);
  std::string message;
  if (message_view.data != nullptr && message_view.len > 0) {
    message.assign(message_view.data, message_view.len);
  }
  const kd_code code = kd_error_code(err);
  kd_error_free(err);  // `message_view` dangles from here on.

  absl::StatusCode status_code;
  switch (code) {
    case KD_CODE_CANCELLED:
      status_code = absl::StatusCode::kCancelled;
      break;
    case KD_CODE_UNKNOWN:
      status_code = absl::StatusCode::kUnknown;
      break;
    case KD_CODE_INVALID_ARGUMENT:
      status_code = absl::StatusCode::kInvalidArgument;
      break;
    case KD_CODE_DEADLINE_EXCEEDED:
      status_code = absl::StatusCode::kDeadlineExceeded;
      break;
    case KD_CODE_NOT_FOUND:
      status_code = absl::StatusCode::kNotFound;
      break;
    case KD_CODE_PERMISSION_DENIED:
      status_code = absl::StatusCode::kPermissionDenied;
      break;
    case KD_CODE_FAILED_PRECONDITION:
      status_code = absl::StatusCode::kFailedPrecondition;
      break;
    case KD_CODE_OUT_OF_RANGE:
      status_code = absl::StatusCode::kOutOfRange;
      break;
    case KD_CODE_INTERNAL:
      status_code = absl::StatusCode::kInternal;
      break;
    case KD_CODE_UNAVAILABLE:
      status_code = absl::StatusCode::kUnavailable;
      break;
    case KD_CODE_DATA_LOSS:
      status_code = absl::StatusCode::kDataLoss;
      break;
    case KD_CODE_UNAUTHENTICATED:
      status_code = absl::StatusCode::kUnauthenticated;
      break;
    case KD_CODE_OK:
      // An error object that claims success is a core bug; never let it pass
      // as OK, or the caller would read out-params that were not written.
      return absl::InternalError(absl::StrCat(
          "kafka_dataset core returned an error with code OK: ", message));
    default:
      // A code added to the core but not yet to this switch.
      return absl::UnknownError(absl::StrCat("kafka_dataset core error code ",
                                             static_cast<int>(code), ": ",
                                             message));
  }
  if (message.empty()) message = "kafka_dataset core error without a message";
  return absl::Status(status_code, message);
}

namespace {

struct DatasetHandleDeleter {
  void operator()(kd_dataset* dataset) const { kd_dataset_free(dataset); }
};
struct ReaderHandleDeleter {
  void operator()(kd_reader* reader) const { kd_reader_free(reader); }
};
using DatasetHandle = std::unique_ptr<kd_dataset, DatasetHandleDeleter>;
using ReaderHandle = std::unique_ptr<kd_reader, ReaderHandleDeleter>;

// Upper bound on one blocking call into the core, so that cancellation (and a
// concurrent Save) is noticed within this many milliseconds.
constexpr uint32_t kNextSliceMs = 100;

// Key under which the core's (self-versioned) state bytes are checkpointed.
constexpr char kState[] = "state";
// Readable copies of each partition's next unemitted offset, for tools
// (`next_offset:<topic>:<partition>`); restore reads only kState.
constexpr char kNextOffsetPrefix[] = "next_offset:";

// Borrowed views of `strings`; valid while `strings` is alive and unchanged.
std::vector<kd_str> StrViews(const std::vector<tstring>& strings) {
  std::vector<kd_str> views;
  views.reserve(strings.size());
  for (const tstring& s : strings) views.push_back(kd_str{s.data(), s.size()});
  return views;
}

// Never hands the core a NULL array pointer, even for an empty list: Rust
// slices must not be built from NULL.
const kd_str* ArrayOrEmpty(const std::vector<kd_str>& views) {
  static const kd_str kEmpty = {"", 0};
  return views.empty() ? &kEmpty : views.data();
}

kd_str StrView(const tstring& s) { return kd_str{s.data(), s.size()}; }

absl::Status CheckInput(const Tensor& t, absl::string_view name, DataType dtype,
                        int rank) {
  if (t.dtype() != dtype) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KdKafkaDataset: `", name, "` must be a ", DataTypeString(dtype),
        " tensor, got ", DataTypeString(t.dtype())));
  }
  if (t.dims() != rank) {
    return absl::InvalidArgumentError(
        absl::StrCat("KdKafkaDataset: `", name, "` must be ",
                     rank == 0 ? "a scalar" : "a 1-D vector", ", got shape ",
                     t.shape().DebugString()));
  }
  return absl::OkStatus();
}

absl::Status ReadStringVector(OpKernelContext* ctx, absl::string_view name,
                              std::vector<tstring>* out) {
  const Tensor* t = nullptr;
  TF_RETURN_IF_ERROR(ctx->input(name, &t));
  TF_RETURN_IF_ERROR(CheckInput(*t, name, DT_STRING, 1));
  const auto flat = t->flat<tstring>();
  out->assign(flat.data(), flat.data() + flat.size());
  return absl::OkStatus();
}

template <typename T>
absl::Status ReadScalar(OpKernelContext* ctx, absl::string_view name, T* out) {
  const Tensor* t = nullptr;
  TF_RETURN_IF_ERROR(ctx->input(name, &t));
  TF_RETURN_IF_ERROR(CheckInput(*t, name, DataTypeToEnum<T>::v(), 0));
  *out = t->scalar<T>()();
  return absl::OkStatus();
}

bool IsCancelled(IteratorContext* ctx) {
  CancellationManager* cm = ctx->cancellation_manager();
  return cm != nullptr && cm->IsCancelled();
}

}  // namespace

class KafkaDatasetOp : public DatasetOpKernel {
 public:
  static constexpr const char* const kDatasetType = "KdKafka";
  static constexpr const char* const kTopics = "topics";
  static constexpr const char* const kServers = "servers";
  static constexpr const char* const kGroup = "group";
  static constexpr const char* const kEof = "eof";
  static constexpr const char* const kTimeout = "timeout";
  static constexpr const char* const kConfigGlobal = "config_global";
  static constexpr const char* const kConfigTopic = "config_topic";
  static constexpr const char* const kMessageKey = "message_key";
  static constexpr const char* const kBatchSize = "batch_size";
  static constexpr const char* const kNumWorkers = "num_workers";
  static constexpr const char* const kWorkerIndex = "worker_index";
  static constexpr const char* const kSubscribe = "subscribe";
  static constexpr const char* const kMessageMetadata = "message_metadata";

  // The op's attributes: the keyword-only extensions beyond DeepRec's inputs.
  struct Attrs {
    bool message_key = false;
    int64_t batch_size = 0;
    int64_t num_workers = 1;
    int64_t worker_index = 0;
    bool subscribe = false;
    bool metadata = false;
  };

  explicit KafkaDatasetOp(OpKernelConstruction* ctx) : DatasetOpKernel(ctx) {
    // A reference from live code keeps the version tag where `retain` is not
    // supported (GCC < 11): the linker would drop it with unused sections.
    (void)*static_cast<const volatile char*>(kd_built_for_tensorflow);
    OP_REQUIRES_OK(ctx, ctx->GetAttr(kMessageKey, &attrs_.message_key));
    OP_REQUIRES_OK(ctx, ctx->GetAttr(kBatchSize, &attrs_.batch_size));
    OP_REQUIRES_OK(ctx, ctx->GetAttr(kNumWorkers, &attrs_.num_workers));
    OP_REQUIRES_OK(ctx, ctx->GetAttr(kWorkerIndex, &attrs_.worker_index));
    OP_REQUIRES_OK(ctx, ctx->GetAttr(kSubscribe, &attrs_.subscribe));
    OP_REQUIRES_OK(ctx, ctx->GetAttr(kMessageMetadata, &attrs_.metadata));
    OP_REQUIRES(ctx, attrs_.batch_size >= 0,
                absl::InvalidArgumentError(absl::StrCat(
                    "batch_size must be >= 0 (0 = one message per element), "
                    "got ",
                    attrs_.batch_size)));
    // num_workers / worker_index are checked by the core (one place).
  }

 protected:
  void MakeDataset(OpKernelContext* ctx, DatasetBase** output) override;

 private:
  class Dataset;

  Attrs attrs_;
};

class KafkaDatasetOp::Dataset : public DatasetBase {
 public:
  Dataset(OpKernelContext* ctx, DatasetHandle handle,
          std::vector<tstring> topics, tstring servers, tstring group, bool eof,
          int64_t timeout_ms, std::vector<tstring> config_global,
          std::vector<tstring> config_topic, Attrs attrs)
      : DatasetBase(DatasetContext(ctx)),
        handle_(std::move(handle)),
        topics_(std::move(topics)),
        servers_(std::move(servers)),
        group_(std::move(group)),
        eof_(eof),
        timeout_ms_(timeout_ms),
        config_global_(std::move(config_global)),
        config_topic_(std::move(config_topic)),
        attrs_(attrs),
        dtypes_(OutputDtypes(attrs)),
        shapes_(OutputShapes(attrs)) {}

  std::unique_ptr<IteratorBase> MakeIteratorInternal(
      const std::string& prefix) const override {
    // Same prefix as name_utils::IteratorPrefix, which lives in
    // libtensorflow_cc and so is not available to a custom-op library.
    return std::make_unique<Iterator>(
        Iterator::Params{this, absl::StrCat(prefix, "::", kDatasetType)});
  }

  // The components of an element. value; with message_key, key. With
  // metadata (message_key is then implied): value, key, topic, partition,
  // offset, timestamp, then the headers flattened (names, values, null flags)
  // and, for native batches, the headers' row splits (batch_size + 1 int64:
  // element i's headers are [splits[i], splits[i+1])). Python structures them
  // into a dict.
  static DataTypeVector OutputDtypes(const Attrs& attrs) {
    if (attrs.metadata) {
      DataTypeVector dtypes{DT_STRING, DT_STRING, DT_STRING, DT_INT32, DT_INT64,
                            DT_INT64,  DT_STRING, DT_STRING, DT_BOOL};
      if (attrs.batch_size > 0) dtypes.push_back(DT_INT64);
      return dtypes;
    }
    return attrs.message_key ? DataTypeVector{DT_STRING, DT_STRING}
                             : DataTypeVector{DT_STRING};
  }

  static std::vector<PartialTensorShape> OutputShapes(const Attrs& attrs) {
    // Native batches are 1-D with 1..batch_size elements.
    const PartialTensorShape per_message = attrs.batch_size > 0
                                               ? PartialTensorShape({-1})
                                               : PartialTensorShape({});
    std::vector<PartialTensorShape> shapes(OutputDtypes(attrs).size(),
                                           per_message);
    if (attrs.metadata) {
      // Headers (and row splits): 1-D of any length.
      for (size_t i = kHeaderNames; i < shapes.size(); ++i) {
        shapes[i] = PartialTensorShape({-1});
      }
    }
    return shapes;
  }

  // Index of the first header component with metadata.
  static constexpr size_t kHeaderNames = 6;

  const DataTypeVector& output_dtypes() const override { return dtypes_; }

  const std::vector<PartialTensorShape>& output_shapes() const override {
    return shapes_;
  }

  std::string DebugString() const override {
    return absl::StrCat(kDatasetType, "DatasetOp::Dataset");
  }

  int64_t CardinalityInternal(CardinalityOptions options) const override {
    return kUnknownCardinality;
  }

  absl::Status InputDatasets(
      std::vector<const DatasetBase*>* inputs) const override {
    return absl::OkStatus();  // A source dataset.
  }

  // The checkpointed state pins the exact position (streams and offsets);
  // the broker holds the data the way a file system holds TFRecord files. So,
  // like TFRecordDataset, report no external state; otherwise TF2
  // tf.train.Checkpoint refuses to save the iterator.
  absl::Status CheckExternalState() const override { return absl::OkStatus(); }

 protected:
  absl::Status AsGraphDefInternal(SerializationContext* ctx,
                                  DatasetGraphDefBuilder* b,
                                  Node** output) const override {
    Node* topics = nullptr;
    TF_RETURN_IF_ERROR(b->AddVector(topics_, &topics));
    Node* servers = nullptr;
    TF_RETURN_IF_ERROR(b->AddScalar(servers_, &servers));
    Node* group = nullptr;
    TF_RETURN_IF_ERROR(b->AddScalar(group_, &group));
    Node* eof = nullptr;
    TF_RETURN_IF_ERROR(b->AddScalar(eof_, &eof));
    Node* timeout = nullptr;
    TF_RETURN_IF_ERROR(b->AddScalar(timeout_ms_, &timeout));
    Node* config_global = nullptr;
    TF_RETURN_IF_ERROR(b->AddVector(config_global_, &config_global));
    Node* config_topic = nullptr;
    TF_RETURN_IF_ERROR(b->AddVector(config_topic_, &config_topic));

    AttrValue message_key;
    b->BuildAttrValue(attrs_.message_key, &message_key);
    AttrValue batch_size;
    b->BuildAttrValue(attrs_.batch_size, &batch_size);
    AttrValue num_workers;
    b->BuildAttrValue(attrs_.num_workers, &num_workers);
    AttrValue worker_index;
    b->BuildAttrValue(attrs_.worker_index, &worker_index);
    AttrValue subscribe;
    b->BuildAttrValue(attrs_.subscribe, &subscribe);
    AttrValue metadata;
    b->BuildAttrValue(attrs_.metadata, &metadata);

    return b->AddDataset(
        this,
        {topics, servers, group, eof, timeout, config_global, config_topic},
        {{kMessageKey, message_key},
         {kBatchSize, batch_size},
         {kNumWorkers, num_workers},
         {kWorkerIndex, worker_index},
         {kSubscribe, subscribe},
         {kMessageMetadata, metadata}},
        output);
  }

 private:
  class Iterator : public DatasetIterator<Dataset> {
   public:
    explicit Iterator(const Params& params)
        : DatasetIterator<Dataset>(params) {}

    // The state is only the position of emitted elements and is cheap to
    // write, so saving after every element (symbolic checkpointing) is fine.
    bool SymbolicCheckpointCompatible() const override { return true; }

    // Resolving the streams happens here, so errors such as an unknown topic
    // (NotFound) surface when the iterator is built; the core connects on
    // the first element (a restore right after this only sets the position).
    absl::Status Initialize(IteratorContext* ctx) override {
      mutex_lock l(mu_);
      return EnsureReaderLocked();
    }

    absl::Status GetNextInternal(IteratorContext* ctx,
                                 std::vector<Tensor>* out_tensors,
                                 bool* end_of_sequence) override {
      // Wait in short slices and take the lock per slice: cancellation is
      // seen within kNextSliceMs, and Save is not blocked by an idle stream.
      while (true) {
        if (IsCancelled(ctx)) {
          return absl::CancelledError(
              "KdKafkaDataset: iterator cancelled while waiting for messages");
        }
        mutex_lock l(mu_);
        bool done = false;
        TF_RETURN_IF_ERROR(
            NextSliceLocked(ctx, out_tensors, end_of_sequence, &done));
        if (done) return absl::OkStatus();
      }
    }

   protected:
    std::shared_ptr<model::Node> CreateNode(
        IteratorContext* ctx, model::Node::Args args) const override {
      return model::MakeSourceNode(std::move(args));
    }

    absl::Status SaveInternal(SerializationContext* ctx,
                              IteratorStateWriter* writer) override {
      // TF does not ask source datasets about external state when saving an
      // iterator; honour the caller's policy ourselves.
      TF_RETURN_IF_ERROR(
          ctx->HandleCheckExternalStateStatus(dataset()->CheckExternalState()));
      mutex_lock l(mu_);
      TF_RETURN_IF_ERROR(EnsureReaderLocked());
      // Symbolic checkpointing saves after every element: leave group commits
      // to their periodic interval then, and skip the readable copies.
      const bool every_element = ctx->symbolic_checkpoint();
      if (!every_element) {
        TF_RETURN_IF_ERROR(ToStatus(kd_reader_commit(reader_.get())));
      }
      kd_bytes state{nullptr, 0};
      TF_RETURN_IF_ERROR(ToStatus(kd_reader_save(reader_.get(), &state)));
      // Copy now: the bytes are only valid until the next call on the reader.
      tstring bytes;
      if (state.data != nullptr && state.len > 0) {
        bytes.assign(reinterpret_cast<const char*>(state.data), state.len);
      }
      TF_RETURN_IF_ERROR(writer->WriteScalar(prefix(), kState, bytes));
      return every_element ? absl::OkStatus() : WritePositionsLocked(writer);
    }

    absl::Status RestoreInternal(IteratorContext* ctx,
                                 IteratorStateReader* reader) override {
      if (!reader->Contains(prefix(), kState)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "KdKafkaDataset: checkpoint has no \"", kState, "\" entry for ",
            prefix(), "; it was not written by this dataset"));
      }
      tstring state;
      TF_RETURN_IF_ERROR(reader->ReadScalar(prefix(), kState, &state));
      mutex_lock l(mu_);
      // TF calls Initialize before Restore; this only guards other callers.
      TF_RETURN_IF_ERROR(EnsureReaderLocked());
      return ToStatus(kd_reader_restore(
          reader_.get(), reinterpret_cast<const uint8_t*>(state.data()),
          state.size()));
    }

   private:
    absl::Status WritePositionsLocked(IteratorStateWriter* writer)
        TF_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      size_t count = 0;
      TF_RETURN_IF_ERROR(
          ToStatus(kd_reader_stream_count(reader_.get(), &count)));
      for (size_t i = 0; i < count; ++i) {
        kd_stream_position position{};
        TF_RETURN_IF_ERROR(
            ToStatus(kd_reader_stream_position(reader_.get(), i, &position)));
        const std::string key = absl::StrCat(
            kNextOffsetPrefix,
            absl::string_view(position.topic.data, position.topic.len), ":",
            position.partition);
        TF_RETURN_IF_ERROR(writer->WriteScalar(
            prefix(), key, static_cast<int64_t>(position.next_offset)));
      }
      return absl::OkStatus();
    }

    absl::Status EnsureReaderLocked() TF_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      if (reader_ != nullptr) return absl::OkStatus();
      kd_reader* raw = nullptr;
      TF_RETURN_IF_ERROR(
          ToStatus(kd_reader_new(dataset()->handle_.get(), &raw)));
      reader_.reset(raw);
      return absl::OkStatus();
    }

    // One bounded wait for the next element. Sets `*done` once the call
    // produced an element or the end of the sequence. The one read path: a
    // scalar element is a batch of one; with batch_size, one 1-D tensor (two
    // with message_key) holds every message the core had ready, up to
    // batch_size.
    absl::Status NextSliceLocked(IteratorContext* ctx,
                                 std::vector<Tensor>* out_tensors,
                                 bool* end_of_sequence, bool* done)
        TF_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      TF_RETURN_IF_ERROR(EnsureReaderLocked());
      const int64_t batch_size = dataset()->attrs_.batch_size;
      kd_next_status status = KD_NEXT_PENDING;
      size_t count = 0;
      TF_RETURN_IF_ERROR(ToStatus(kd_reader_next_batch(
          reader_.get(), batch_size > 0 ? static_cast<size_t>(batch_size) : 1,
          kNextSliceMs, &status, &count)));
      switch (status) {
        case KD_NEXT_ELEMENT:
          break;
        case KD_NEXT_END:
          *end_of_sequence = true;
          *done = true;
          return absl::OkStatus();
        case KD_NEXT_PENDING:
          *done = false;
          return absl::OkStatus();
        default:
          return absl::InternalError(
              absl::StrCat("KdKafkaDataset: unexpected kd_next_status ",
                           static_cast<int>(status)));
      }
      if (count == 0) {
        return absl::InternalError(
            "KdKafkaDataset: the core reported an element but no message");
      }
      // The views borrow from the reader until its next call: copy them out
      // while the lock is still held.
      views_.resize(count);
      TF_RETURN_IF_ERROR(ToStatus(
          kd_reader_batch_messages(reader_.get(), views_.data(), count)));
      const bool with_key = dataset()->attrs_.message_key;
      int64_t bytes = 0;
      if (dataset()->attrs_.metadata) {
        TF_RETURN_IF_ERROR(AppendMetadataLocked(ctx, count, batch_size > 0,
                                                out_tensors, &bytes));
      } else if (batch_size > 0) {
        Tensor values(ctx->allocator({}), DT_STRING,
                      TensorShape({static_cast<int64_t>(count)}));
        Tensor keys(ctx->allocator({}), DT_STRING,
                    TensorShape({with_key ? static_cast<int64_t>(count) : 0}));
        auto value_flat = values.flat<tstring>();
        auto key_flat = keys.flat<tstring>();
        for (size_t i = 0; i < count; ++i) {
          bytes += Assign(views_[i].value, &value_flat(i));
          if (with_key) bytes += Assign(views_[i].key, &key_flat(i));
        }
        out_tensors->push_back(std::move(values));
        if (with_key) out_tensors->push_back(std::move(keys));
      } else {
        out_tensors->reserve(with_key ? 2 : 1);
        bytes += AppendScalar(ctx, views_[0].value, out_tensors);
        if (with_key) bytes += AppendScalar(ctx, views_[0].key, out_tensors);
      }
      static monitoring::CounterCell* bytes_counter =
          metrics::GetTFDataBytesReadCounter(kDatasetType);
      bytes_counter->IncrementBy(bytes);
      *end_of_sequence = false;
      *done = true;
      return absl::OkStatus();
    }

    // The metadata components (see OutputDtypes) of the `count` messages in
    // views_; `batched`: 1-D per-message fields and header row splits, else
    // scalars for views_[0].
    absl::Status AppendMetadataLocked(IteratorContext* ctx, size_t count,
                                      bool batched,
                                      std::vector<Tensor>* out_tensors,
                                      int64_t* bytes)
        TF_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      if (header_counts_capacity_ < count) {
        header_counts_.reset(new size_t[count]);
        header_counts_capacity_ = count;
      }
      size_t total = 0;
      TF_RETURN_IF_ERROR(ToStatus(
          kd_reader_batch_headers(reader_.get(), count, header_counts_.get(),
                                  headers_.data(), headers_.size(), &total)));
      if (total > headers_.size()) {
        headers_.resize(total);
        TF_RETURN_IF_ERROR(ToStatus(
            kd_reader_batch_headers(reader_.get(), count, header_counts_.get(),
                                    headers_.data(), headers_.size(), &total)));
      }
      const int64_t n = static_cast<int64_t>(count);
      const TensorShape field_shape =
          batched ? TensorShape({n}) : TensorShape({});
      Tensor values(ctx->allocator({}), DT_STRING, field_shape);
      Tensor keys(ctx->allocator({}), DT_STRING, field_shape);
      Tensor topics(ctx->allocator({}), DT_STRING, field_shape);
      Tensor partitions(ctx->allocator({}), DT_INT32, field_shape);
      Tensor offsets(ctx->allocator({}), DT_INT64, field_shape);
      Tensor timestamps(ctx->allocator({}), DT_INT64, field_shape);
      // flat<>() views a scalar as one element too.
      auto value_flat = values.flat<tstring>();
      auto key_flat = keys.flat<tstring>();
      auto topic_flat = topics.flat<tstring>();
      auto partition_flat = partitions.flat<int32_t>();
      auto offset_flat = offsets.flat<int64_t>();
      auto timestamp_flat = timestamps.flat<int64_t>();
      for (size_t i = 0; i < count; ++i) {
        const kd_message_view& m = views_[i];
        *bytes += Assign(m.value, &value_flat(i));
        *bytes += Assign(m.key, &key_flat(i));
        if (m.topic.data != nullptr) {
          topic_flat(i).assign(m.topic.data, m.topic.len);
        }
        partition_flat(i) = m.partition;
        offset_flat(i) = m.offset;
        timestamp_flat(i) = m.timestamp;
      }
      const TensorShape header_shape({static_cast<int64_t>(total)});
      Tensor names(ctx->allocator({}), DT_STRING, header_shape);
      Tensor header_values(ctx->allocator({}), DT_STRING, header_shape);
      Tensor nulls(ctx->allocator({}), DT_BOOL, header_shape);
      auto name_flat = names.flat<tstring>();
      auto header_value_flat = header_values.flat<tstring>();
      auto null_flat = nulls.flat<bool>();
      for (size_t j = 0; j < total; ++j) {
        const kd_header_view& h = headers_[j];
        *bytes += Assign(h.name, &name_flat(j));
        *bytes += Assign(h.value, &header_value_flat(j));
        null_flat(j) = h.value_is_null;
      }
      out_tensors->reserve(batched ? 10 : 9);
      out_tensors->push_back(std::move(values));
      out_tensors->push_back(std::move(keys));
      out_tensors->push_back(std::move(topics));
      out_tensors->push_back(std::move(partitions));
      out_tensors->push_back(std::move(offsets));
      out_tensors->push_back(std::move(timestamps));
      out_tensors->push_back(std::move(names));
      out_tensors->push_back(std::move(header_values));
      out_tensors->push_back(std::move(nulls));
      if (batched) {
        Tensor splits(ctx->allocator({}), DT_INT64, TensorShape({n + 1}));
        auto split_flat = splits.flat<int64_t>();
        int64_t at = 0;
        split_flat(0) = 0;
        for (size_t i = 0; i < count; ++i) {
          at += static_cast<int64_t>(header_counts_[i]);
          split_flat(i + 1) = at;
        }
        out_tensors->push_back(std::move(splits));
      }
      return absl::OkStatus();
    }

    // A null payload or key arrives as length 0 (and maybe a NULL pointer).
    // Returns the number of bytes copied.
    static int64_t Assign(const kd_bytes& bytes, tstring* out) {
      if (bytes.data != nullptr && bytes.len > 0) {
        out->assign(reinterpret_cast<const char*>(bytes.data), bytes.len);
      }
      return static_cast<int64_t>(bytes.len);
    }

    static int64_t AppendScalar(IteratorContext* ctx, const kd_bytes& bytes,
                                std::vector<Tensor>* out_tensors) {
      out_tensors->emplace_back(ctx->allocator({}), DT_STRING, TensorShape({}));
      return Assign(bytes, &out_tensors->back().scalar<tstring>()());
    }

    mutex mu_;
    // Not thread-safe in the core; every call on it happens under `mu_`.
    ReaderHandle reader_ TF_GUARDED_BY(mu_);
    // Reused for every call (no allocation per element).
    std::vector<kd_message_view> views_ TF_GUARDED_BY(mu_);
    // With metadata only: per-message header counts and the batch's headers.
    // Not a std::vector<size_t>: its out-of-line members are instantiated with
    // default visibility (namespace std is declared so) and a Bazel-linked
    // library would export them; the cargo build hides them by its own
    // version script.
    std::unique_ptr<size_t[]> header_counts_ TF_GUARDED_BY(mu_);
    size_t header_counts_capacity_ TF_GUARDED_BY(mu_) = 0;
    std::vector<kd_header_view> headers_ TF_GUARDED_BY(mu_);
  };

  // Immutable and thread-safe in the core; shared by all iterators, which
  // hold a reference on this dataset and so never outlive the handle.
  const DatasetHandle handle_;
  // Copies of the op inputs, to rebuild the node in AsGraphDefInternal.
  const std::vector<tstring> topics_;
  const tstring servers_;
  const tstring group_;
  const bool eof_;
  const int64_t timeout_ms_;
  const std::vector<tstring> config_global_;
  const std::vector<tstring> config_topic_;
  const Attrs attrs_;
  const DataTypeVector dtypes_;
  const std::vector<PartialTensorShape> shapes_;
};

void KafkaDatasetOp::MakeDataset(OpKernelContext* ctx, DatasetBase** output) {
  std::vector<tstring> topics;
  OP_REQUIRES_OK(ctx, ReadStringVector(ctx, kTopics, &topics));
  tstring servers;
  OP_REQUIRES_OK(ctx, ReadScalar<tstring>(ctx, kServers, &servers));
  tstring group;
  OP_REQUIRES_OK(ctx, ReadScalar<tstring>(ctx, kGroup, &group));
  bool eof = false;
  OP_REQUIRES_OK(ctx, ReadScalar<bool>(ctx, kEof, &eof));
  int64_t timeout_ms = 0;
  OP_REQUIRES_OK(ctx, ReadScalar<int64_t>(ctx, kTimeout, &timeout_ms));
  std::vector<tstring> config_global;
  OP_REQUIRES_OK(ctx, ReadStringVector(ctx, kConfigGlobal, &config_global));
  std::vector<tstring> config_topic;
  OP_REQUIRES_OK(ctx, ReadStringVector(ctx, kConfigTopic, &config_topic));

  // The views borrow from the vectors above; the core copies what it keeps,
  // so they only need to outlive kd_dataset_new.
  const std::vector<kd_str> topic_views = StrViews(topics);
  const std::vector<kd_str> config_global_views = StrViews(config_global);
  const std::vector<kd_str> config_topic_views = StrViews(config_topic);
  kd_dataset_options options{};
  options.topics = ArrayOrEmpty(topic_views);
  options.topics_len = topic_views.size();
  options.servers = StrView(servers);
  options.group = StrView(group);
  options.eof = eof;
  options.timeout_ms = timeout_ms;
  options.config_global = ArrayOrEmpty(config_global_views);
  options.config_global_len = config_global_views.size();
  options.config_topic = ArrayOrEmpty(config_topic_views);
  options.config_topic_len = config_topic_views.size();
  options.num_workers = attrs_.num_workers;
  options.worker_index = attrs_.worker_index;
  options.subscribe = attrs_.subscribe;

  kd_dataset* raw = nullptr;
  OP_REQUIRES_OK(ctx, ToStatus(kd_dataset_new(&options, &raw)));
  DatasetHandle handle(raw);

  *output =
      new Dataset(ctx, std::move(handle), std::move(topics), std::move(servers),
                  std::move(group), eof, timeout_ms, std::move(config_global),
                  std::move(config_topic), attrs_);
}

namespace {

REGISTER_OP("KdKafkaDataset")
    .Input("topics: string")
    .Input("servers: string")
    .Input("group: string")
    .Input("eof: bool")
    .Input("timeout: int64")
    .Input("config_global: string")
    .Input("config_topic: string")
    .Output("handle: variant")
    .Attr("message_key: bool = false")
    // > 0: each element is a 1-D batch of up to batch_size messages filled by
    // the core (one copy per message), instead of one scalar per message.
    .Attr("batch_size: int = 0")
    // Workers splitting the partitions: this dataset reads partition p of
    // topic t when (fnv1a32(t) + p) % num_workers == worker_index.
    .Attr("num_workers: int = 1")
    .Attr("worker_index: int = 0")
    // Join the consumer group `group` and read the partitions it assigns
    // (entries are topic names; checked by the core).
    .Attr("subscribe: bool = false")
    // `metadata=True` in Python (the name `metadata` is taken by every dataset
    // op). Each element (or native batch) also carries key, topic, partition,
    // offset, timestamp and the headers (see Dataset::OutputDtypes).
    .Attr("message_metadata: bool = false")
    // A source that reads external, changing data: keep TF from constant
    // folding or deduplicating it (TF's own source datasets do the same).
    .SetIsStateful()
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle unused;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 1, &unused));  // topics
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 0, &unused));  // servers
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 0, &unused));  // group
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 0, &unused));  // eof
      TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 0, &unused));  // timeout
      TF_RETURN_IF_ERROR(c->WithRank(c->input(5), 1, &unused));  // config_g.
      TF_RETURN_IF_ERROR(c->WithRank(c->input(6), 1, &unused));  // config_t.
      return shape_inference::ScalarShape(c);
    });

REGISTER_KERNEL_BUILDER(Name("KdKafkaDataset").Device(DEVICE_CPU),
                        KafkaDatasetOp);

// The counters and positions of every live KafkaDataset iterator in this
// process, as the core's JSON document (scalar string).
class KafkaStatsOp : public OpKernel {
 public:
  explicit KafkaStatsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    kd_text* raw = nullptr;
    OP_REQUIRES_OK(ctx, ToStatus(kd_stats_json(&raw)));
    std::unique_ptr<kd_text, decltype(&kd_text_free)> text(raw, &kd_text_free);
    const kd_str view = kd_text_view(text.get());
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &output));
    output->scalar<tstring>()().assign(view.data, view.len);
  }
};

REGISTER_OP("KdKafkaStats")
    .Output("stats: string")
    // A new reading every run: never constant folded or deduplicated.
    .SetIsStateful()
    .SetShapeFn(shape_inference::ScalarShape);

REGISTER_KERNEL_BUILDER(Name("KdKafkaStats").Device(DEVICE_CPU), KafkaStatsOp);

}  // namespace
}  // namespace kafka_dataset
}  // namespace data
}  // namespace tensorflow
