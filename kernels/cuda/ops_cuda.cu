// CUDA kernels of the fastgp ops: the same formulas as the CPU kernels, through the shared
// per-element header (include/fastgp/elementwise.h), which the CPU tests exercise, and the same
// host-side setup (include/fastgp/arguments.h: checks, layout, outputs).
//
// Elementwise kernels use grid-stride loops over the sample-major flat layout and write outputs
// in it (the rule of include/fastgp/host.h, which the fake kernels share). The norm is a split
// reduction: block (sample, split) sums one chunk of one sample into a partial, one block then
// finalizes norms and the penalty. Every op first checks that its tensors share one device, then
// makes that device current (CUDAGuard): launches go to its current stream; nothing syncs.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>

#include "fastgp/arguments.h"
#include "fastgp/elementwise.h"

namespace fastgp {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;
constexpr int64_t kBlocksPerSm = 4;  // norm reduction: a few waves of the device's SMs

// Blocks the norm reduction aims for on the current device (the op's, under its CUDAGuard).
// Asked of the CUDA runtime: ATen/cuda/CUDAContext.h would also need the cuBLAS and cuSPARSE
// headers, which a minimal toolkit (nvcc and cudart) does not have.
int64_t target_blocks() {
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount,
                                        c10::cuda::current_device()));
  return kBlocksPerSm * sms;
}

int64_t elementwise_blocks(int64_t n) {
  return std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks));
}

#define FASTGP_GRID_STRIDE(i, n)                                                  \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; \
       i < (n); i += static_cast<int64_t>(blockDim.x) * gridDim.x)

template <typename acc_t>
__device__ acc_t block_sum(acc_t value) {
  __shared__ acc_t shared[kThreads];
  shared[threadIdx.x] = value;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
    __syncthreads();
  }
  return shared[0];
}

template <typename scalar_t, typename acc_t>
__global__ void interpolate_kernel(const scalar_t* real, const scalar_t* fake,
                                   const scalar_t* eps, scalar_t* out, int64_t n,
                                   int64_t sample_size) {
  FASTGP_GRID_STRIDE(i, n) {
    const acc_t weight = static_cast<acc_t>(eps[i / sample_size]);
    out[i] = static_cast<scalar_t>(
        interpolate<acc_t>(weight, static_cast<acc_t>(real[i]), static_cast<acc_t>(fake[i])));
  }
}

template <typename scalar_t, typename acc_t>
__global__ void interpolate_backward_kernel(const scalar_t* grad, const scalar_t* eps,
                                            scalar_t* grad_real, scalar_t* grad_fake, int64_t n,
                                            int64_t sample_size) {
  FASTGP_GRID_STRIDE(i, n) {
    const acc_t weight = static_cast<acc_t>(eps[i / sample_size]);
    const acc_t value = static_cast<acc_t>(grad[i]);
    grad_real[i] = static_cast<scalar_t>(interpolate_grad_real<acc_t>(weight, value));
    grad_fake[i] = static_cast<scalar_t>(interpolate_grad_fake<acc_t>(weight, value));
  }
}

template <typename scalar_t, typename acc_t>
__global__ void sum_of_squares_kernel(const scalar_t* grad, acc_t* partial, int64_t sample_size,
                                      int64_t chunk, int64_t splits) {
  const int64_t sample = blockIdx.x, split = blockIdx.y;
  const int64_t begin = sample * sample_size + split * chunk;
  const int64_t split_end = (split + 1) * chunk;
  const int64_t end = sample * sample_size + (split_end < sample_size ? split_end : sample_size);
  acc_t sum = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const acc_t value = static_cast<acc_t>(grad[i]);
    sum += value * value;
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) partial[sample * splits + split] = sum;
}

template <typename acc_t>
__global__ void penalty_finalize_kernel(const acc_t* partial, acc_t* norms, acc_t* penalty,
                                        int64_t batch, int64_t splits, acc_t weight,
                                        acc_t center, bool one_sided) {
  acc_t total = 0;
  for (int64_t sample = threadIdx.x; sample < batch; sample += kThreads) {
    acc_t squares = 0;
    for (int64_t split = 0; split < splits; ++split) squares += partial[sample * splits + split];
    const acc_t norm = sqrt(squares);
    norms[sample] = norm;
    const acc_t deviation = penalty_deviation<acc_t>(norm, center, one_sided);
    total += deviation * deviation;
  }
  total = block_sum(total);
  if (threadIdx.x == 0) *penalty = weight * total / static_cast<acc_t>(batch);
}

template <typename scalar_t, typename acc_t>
__global__ void norm_penalty_backward_kernel(const scalar_t* grad, const acc_t* norms,
                                             const acc_t* grad_penalty, const acc_t* grad_norms,
                                             scalar_t* out, int64_t n, int64_t sample_size,
                                             int64_t batch, acc_t weight, acc_t center,
                                             bool one_sided) {
  const acc_t upstream = *grad_penalty;
  FASTGP_GRID_STRIDE(i, n) {
    const int64_t sample = i / sample_size;
    const acc_t scale = penalty_scale<acc_t>(norms[sample], center, one_sided, weight, batch,
                                             upstream, grad_norms ? grad_norms[sample] : acc_t(0));
    out[i] = static_cast<scalar_t>(penalty_grad<acc_t>(scale, static_cast<acc_t>(grad[i])));
  }
}

template <typename scalar_t, typename acc_t>
__global__ void bias_leaky_relu_kernel(const scalar_t* x, const scalar_t* bias, scalar_t* out,
                                       bool* mask, int64_t n, int64_t inner, int64_t channels,
                                       acc_t negative_slope) {
  FASTGP_GRID_STRIDE(i, n) {
    const acc_t shift = bias ? static_cast<acc_t>(bias[(i / inner) % channels]) : acc_t(0);
    const acc_t y = static_cast<acc_t>(x[i]) + shift;
    out[i] = static_cast<scalar_t>(leaky_relu<acc_t>(y, negative_slope));
    mask[i] = leaky_relu_mask<acc_t>(y);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void leaky_relu_mask_backward_kernel(const scalar_t* grad, const bool* mask,
                                                scalar_t* out, int64_t n, acc_t negative_slope) {
  FASTGP_GRID_STRIDE(i, n) {
    out[i] = static_cast<scalar_t>(
        leaky_relu_grad<acc_t>(static_cast<acc_t>(grad[i]), mask[i], negative_slope));
  }
}

at::Tensor interpolate_cuda(const at::Tensor& real, const at::Tensor& fake, const at::Tensor& eps) {
  const InterpolateArgs a = prepare_interpolate(real, fake, eps);
  const c10::cuda::CUDAGuard guard(a.real.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.real.scalar_type(), "interpolate", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    interpolate_kernel<scalar_t, acc_t><<<elementwise_blocks(a.n), kThreads, 0, stream>>>(
        a.real.const_data_ptr<scalar_t>(), a.fake.const_data_ptr<scalar_t>(),
        a.eps.const_data_ptr<scalar_t>(), a.out.mutable_data_ptr<scalar_t>(), a.n, a.sample_size);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return a.out;
}

std::tuple<at::Tensor, at::Tensor> interpolate_backward_cuda(const at::Tensor& grad,
                                                             const at::Tensor& eps) {
  const InterpolateBackwardArgs a = prepare_interpolate_backward(grad, eps);
  const c10::cuda::CUDAGuard guard(a.grad.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.grad.scalar_type(),
                                  "interpolate_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    interpolate_backward_kernel<scalar_t, acc_t><<<elementwise_blocks(a.n), kThreads, 0, stream>>>(
        a.grad.const_data_ptr<scalar_t>(), a.eps.const_data_ptr<scalar_t>(),
        a.grad_real.mutable_data_ptr<scalar_t>(), a.grad_fake.mutable_data_ptr<scalar_t>(), a.n,
        a.sample_size);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {a.grad_real, a.grad_fake};
}

std::tuple<at::Tensor, at::Tensor> norm_penalty_cuda(const at::Tensor& grad, double weight,
                                                     double center, bool one_sided) {
  const NormPenaltyArgs a = prepare_norm_penalty(grad);
  const c10::cuda::CUDAGuard guard(a.grad.device());
  const SplitPlan plan = split_plan(a.batch, a.sample_size, target_blocks());
  const int64_t splits = plan.splits, chunk = plan.chunk;
  at::Tensor partial = at::empty({a.batch, splits}, a.norms.options());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.grad.scalar_type(), "norm_penalty", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const dim3 grid(static_cast<unsigned>(a.batch), static_cast<unsigned>(splits));
    sum_of_squares_kernel<scalar_t, acc_t><<<grid, kThreads, 0, stream>>>(
        a.grad.const_data_ptr<scalar_t>(), partial.mutable_data_ptr<acc_t>(), a.sample_size, chunk,
        splits);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    penalty_finalize_kernel<acc_t><<<1, kThreads, 0, stream>>>(
        partial.const_data_ptr<acc_t>(), a.norms.mutable_data_ptr<acc_t>(),
        a.penalty.mutable_data_ptr<acc_t>(), a.batch, splits, static_cast<acc_t>(weight),
        static_cast<acc_t>(center), one_sided);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {a.penalty, a.norms};
}

at::Tensor norm_penalty_backward_cuda(const at::Tensor& grad, const at::Tensor& norms,
                                      const std::optional<at::Tensor>& grad_penalty,
                                      const std::optional<at::Tensor>& grad_norms,
                                      double weight, double center, bool one_sided) {
  const NormPenaltyBackwardArgs a = prepare_norm_penalty_backward(grad, norms, grad_penalty, grad_norms);
  const c10::cuda::CUDAGuard guard(a.grad.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.grad.scalar_type(),
                                  "norm_penalty_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    norm_penalty_backward_kernel<scalar_t, acc_t><<<elementwise_blocks(a.n), kThreads, 0, stream>>>(
        a.grad.const_data_ptr<scalar_t>(), a.norms.const_data_ptr<acc_t>(),
        a.grad_penalty.const_data_ptr<acc_t>(),
        a.grad_norms.defined() ? a.grad_norms.const_data_ptr<acc_t>() : nullptr,
        a.out.mutable_data_ptr<scalar_t>(), a.n, a.sample_size, a.batch,
        static_cast<acc_t>(weight), static_cast<acc_t>(center), one_sided);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return a.out;
}

std::tuple<at::Tensor, at::Tensor> bias_leaky_relu_cuda(const at::Tensor& x,
                                                        const std::optional<at::Tensor>& bias,
                                                        double negative_slope, int64_t channel_dim) {
  const BiasLeakyReluArgs a = prepare_bias_leaky_relu(x, bias, channel_dim);
  const c10::cuda::CUDAGuard guard(a.x.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "bias_leaky_relu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    bias_leaky_relu_kernel<scalar_t, acc_t><<<elementwise_blocks(a.n), kThreads, 0, stream>>>(
        a.x.const_data_ptr<scalar_t>(), a.bias.defined() ? a.bias.const_data_ptr<scalar_t>() : nullptr,
        a.out.mutable_data_ptr<scalar_t>(), a.mask.mutable_data_ptr<bool>(), a.n, a.inner,
        a.channels, static_cast<acc_t>(negative_slope));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {a.out, a.mask};
}

at::Tensor leaky_relu_mask_backward_cuda(const at::Tensor& grad, const at::Tensor& mask,
                                         double negative_slope) {
  const MaskBackwardArgs a = prepare_mask_backward(grad, mask);
  const c10::cuda::CUDAGuard guard(a.grad.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.grad.scalar_type(),
                                  "leaky_relu_mask_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    leaky_relu_mask_backward_kernel<scalar_t, acc_t><<<elementwise_blocks(a.n), kThreads, 0, stream>>>(
        a.grad.const_data_ptr<scalar_t>(), a.mask.const_data_ptr<bool>(),
        a.out.mutable_data_ptr<scalar_t>(), a.n, static_cast<acc_t>(negative_slope));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return a.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgp_native, CUDA, m) {
  m.impl("interpolate", &interpolate_cuda);
  m.impl("interpolate_backward", &interpolate_backward_cuda);
  m.impl("norm_penalty", &norm_penalty_cuda);
  m.impl("norm_penalty_backward", &norm_penalty_backward_cuda);
  m.impl("bias_leaky_relu", &bias_leaky_relu_cuda);
  m.impl("leaky_relu_mask_backward", &leaky_relu_mask_backward_cuda);
}

}  // namespace fastgp
