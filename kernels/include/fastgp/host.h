// Host-side helpers shared by the CPU (cpu/ops_cpu.cpp) and CUDA (cuda/ops_cuda.cu) kernels:
// input checks and the sample-major layout every kernel assumes (element j of sample i at
// offset i·M + j: contiguous and channels_last tensors qualify, anything else is copied once).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace fastgp {

inline bool is_sample_major(const at::Tensor& t) {
  if (t.is_contiguous()) return true;
  if (t.dim() == 4) return t.is_contiguous(at::MemoryFormat::ChannelsLast);
  if (t.dim() == 5) return t.is_contiguous(at::MemoryFormat::ChannelsLast3d);
  return false;
}

inline at::Tensor sample_major(const at::Tensor& t) {
  return is_sample_major(t) ? t : t.contiguous();
}

// Two batches addressed by one flat offset: sample-major with identical strides.
inline void match_layout(at::Tensor& a, at::Tensor& b) {
  a = sample_major(a);
  b = sample_major(b);
  if (a.strides() != b.strides()) {
    a = a.contiguous();
    b = b.contiguous();
  }
}

inline void check_batch(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() >= 1 && t.size(0) > 0, name, " must be a non-empty batch, got shape ",
              t.sizes());
  TORCH_CHECK(t.is_floating_point(), name, " must be floating point, got ", t.scalar_type());
}

// Norms and penalty accumulate in fp32, or in fp64 for fp64 inputs.
inline at::ScalarType accumulation_type(at::ScalarType type) {
  return type == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace fastgp
