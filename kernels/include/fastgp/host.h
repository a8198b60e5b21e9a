// Host-side helpers shared by the CPU (cpu/ops_cpu.cpp) and CUDA (cuda/ops_cuda.cu) kernels:
// input checks, the split plan of the CUDA norm reduction, and the sample-major layout every
// kernel assumes (element j of sample i at offset i·M + j: contiguous and channels_last tensors
// qualify, anything else is copied once).
//
// The layout rule is the one of fastgp/ops/_layout.py, which the fake kernels use: an output has
// its input's strides when the input is sample-major, contiguous strides otherwise. Real and
// fake strides must agree, or Inductor's stride assertions fail under torch.compile.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_strided.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>

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

// An uninitialized output with the strides of the sample-major tensor t. Explicit strides, not
// empty_like: output_like in fastgp/ops/_layout.py does the same, so real and fake agree even on
// the strides of size-1 dimensions.
inline at::Tensor output_like(const at::Tensor& t, at::ScalarType dtype) {
  return at::empty_strided(t.sizes(), t.strides(), t.options().dtype(dtype));
}

inline at::Tensor output_like(const at::Tensor& t) { return output_like(t, t.scalar_type()); }

// One flat offset reaches the same element of a and b: equal strides on every dimension of size
// > 1 (the stride of a size-1 dimension is never used).
inline bool same_addressing(const at::Tensor& a, const at::Tensor& b) {
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) > 1 && a.stride(d) != b.stride(d)) return false;
  }
  return true;
}

// a sample-major and b addressed like it (b copied into a's layout when they differ), so one
// flat offset reads both and the output, allocated like a, keeps a's layout.
inline void match_layout(at::Tensor& a, at::Tensor& b, const char* a_name, const char* b_name) {
  TORCH_CHECK(a.sizes() == b.sizes(), a_name, " and ", b_name, " must have the same shape, got ",
              a.sizes(), " and ", b.sizes());
  a = sample_major(a);
  if (!same_addressing(a, b)) b = output_like(a, b.scalar_type()).copy_(b);
}

inline void check_batch(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() >= 1 && t.size(0) > 0, name, " must be a non-empty batch, got shape ",
              t.sizes());
  TORCH_CHECK(t.is_floating_point(), name, " must be floating point, got ", t.scalar_type());
}

// Tensor argument t on ref's device (an undefined t, an absent optional, passes): the kernels
// dereference raw pointers, so a tensor on another GPU or on the host would be read as garbage
// or fault. A ValueError in Python, like the check of fastgp/ops/_checks.py.
inline void check_same_device(const char* op, const at::Tensor& ref, const char* ref_name,
                              const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(!t.defined() || t.device() == ref.device(), op,
              ": every tensor argument must be on the same device, got ", ref_name, " on ",
              ref.device(), " and ", name, " on ", t.device());
}

// Norms and penalty accumulate in fp32, or in fp64 for fp64 inputs.
inline at::ScalarType accumulation_type(at::ScalarType type) {
  return type == at::kDouble ? at::kDouble : at::kFloat;
}

// Split reduction of the CUDA norm kernel: block (i, s) sums columns
// [s·chunk, min((s+1)·chunk, M)) of sample i. Enough splits per sample for about target_blocks
// blocks in all (a few per SM of the device) when the batch is small; no split under
// kMinSplitSize elements, so small samples take one block each. A sample without elements
// (M = 0) gets one empty split: norm 0.
constexpr int64_t kMinSplitSize = 4096;

struct SplitPlan {
  int64_t splits;
  int64_t chunk;
};

inline SplitPlan split_plan(int64_t batch, int64_t sample_size, int64_t target_blocks) {
  const int64_t wanted = std::max<int64_t>(1, target_blocks / std::max<int64_t>(batch, 1));
  const int64_t splits =
      std::max<int64_t>(1, std::min<int64_t>(wanted, sample_size / kMinSplitSize));
  return {splits, (sample_size + splits - 1) / splits};
}

}  // namespace fastgp
