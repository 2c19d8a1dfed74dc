#include "encoders/nn/weights.h"

#include <cstring>
#include <set>

#include "common/error.h"

namespace mms::nn {
namespace {

DType dtype_of(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat: return DType::kF32;
    case torch::kLong: return DType::kI64;
    case torch::kHalf: return DType::kF16;
    case torch::kBFloat16: return DType::kBF16;
    default:
      throw Error::internal(std::string("weights: no safetensors dtype for ") +
                            c10::toString(t.scalar_type()));
  }
}

template <typename F>
void for_each_tensor(DualEncoder& model, F&& f) {
  for (const auto& item : model->named_parameters(true)) f(item.key(), item.value());
  for (const auto& item : model->named_buffers(true)) f(item.key(), item.value());
}

}  // namespace

SafeTensors model_to_safetensors(DualEncoder& model) {
  SafeTensors out;
  out.metadata["format"] = "mmsearch-dual-encoder-1";
  for_each_tensor(model, [&](const std::string& name, const torch::Tensor& t) {
    const torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    TensorData data;
    data.dtype = dtype_of(c);
    data.shape.assign(c.sizes().begin(), c.sizes().end());
    data.bytes.resize(c.nbytes());
    std::memcpy(data.bytes.data(), c.data_ptr(), c.nbytes());  // x86-64: already little-endian
    out.tensors.emplace(name, std::move(data));
  });
  return out;
}

void load_model_weights(DualEncoder& model, const SafeTensors& weights, const std::string& file) {
  std::set<std::string> expected;
  // Check everything before copying anything, so a bad file leaves the model untouched.
  for_each_tensor(model, [&](const std::string& name, const torch::Tensor& t) {
    expected.insert(name);
    check_tensor(weights, name, dtype_of(t), std::vector<int64_t>(t.sizes().begin(), t.sizes().end()),
                 file);
  });
  check_no_extra_tensors(weights, expected, file);
  torch::NoGradGuard no_grad;
  for_each_tensor(model, [&](const std::string& name, const torch::Tensor& t) {
    const TensorData& data = weights.tensors.at(name);
    torch::Tensor src = torch::from_blob(const_cast<uint8_t*>(data.bytes.data()), t.sizes(),
                                         t.options().device(torch::kCPU));
    t.copy_(src);
  });
}

}  // namespace mms::nn
