// CUDA kernels of the fastgp ops: the same formulas as the CPU kernels, through the shared
// per-element header (include/fastgp/elementwise.h), which the CPU tests exercise.
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
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>

#include "fastgp/elementwise.h"
#include "fastgp/host.h"

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
    grad_real[i] = static_cast<scalar_t>(weight * value);
    grad_fake[i] = static_cast<scalar_t>((acc_t(1) - weight) * value);
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
    out[i] = static_cast<scalar_t>(scale * static_cast<acc_t>(grad[i]));
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
    mask[i] = y > acc_t(0);
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

at::Tensor interpolate_cuda(const at::Tensor& real_in, const at::Tensor& fake_in,
                            const at::Tensor& eps_in) {
  check_batch(real_in, "real");
  check_same_device("interpolate", real_in, "real", fake_in, "fake");
  check_same_device("interpolate", real_in, "real", eps_in, "eps");
  const c10::cuda::CUDAGuard guard(real_in.device());
  at::Tensor real = real_in, fake = fake_in;
  match_layout(real, fake, "real", "fake");
  at::Tensor eps = eps_in.to(real.scalar_type()).contiguous();
  at::Tensor out = output_like(real);
  const int64_t n = real.numel(), sample_size = n / real.size(0);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, real.scalar_type(), "interpolate", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    interpolate_kernel<scalar_t, acc_t><<<elementwise_blocks(n), kThreads, 0, stream>>>(
        real.const_data_ptr<scalar_t>(), fake.const_data_ptr<scalar_t>(),
        eps.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), n, sample_size);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> interpolate_backward_cuda(const at::Tensor& grad_in,
                                                             const at::Tensor& eps_in) {
  check_batch(grad_in, "grad");
  check_same_device("interpolate_backward", grad_in, "grad", eps_in, "eps");
  const c10::cuda::CUDAGuard guard(grad_in.device());
  at::Tensor grad = sample_major(grad_in);
  at::Tensor eps = eps_in.to(grad.scalar_type()).contiguous();
  at::Tensor grad_real = output_like(grad), grad_fake = output_like(grad);
  const int64_t n = grad.numel(), sample_size = n / grad.size(0);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(),
                                  "interpolate_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    interpolate_backward_kernel<scalar_t, acc_t><<<elementwise_blocks(n), kThreads, 0, stream>>>(
        grad.const_data_ptr<scalar_t>(), eps.const_data_ptr<scalar_t>(),
        grad_real.mutable_data_ptr<scalar_t>(), grad_fake.mutable_data_ptr<scalar_t>(), n,
        sample_size);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_real, grad_fake};
}

std::tuple<at::Tensor, at::Tensor> norm_penalty_cuda(const at::Tensor& grad_in, double weight,
                                                     double center, bool one_sided) {
  check_batch(grad_in, "grad");
  const c10::cuda::CUDAGuard guard(grad_in.device());
  at::Tensor grad = sample_major(grad_in);
  const int64_t batch = grad.size(0), sample_size = grad.numel() / batch;
  const auto options = grad.options().dtype(accumulation_type(grad.scalar_type()));
  const SplitPlan plan = split_plan(batch, sample_size, target_blocks());
  const int64_t splits = plan.splits, chunk = plan.chunk;
  at::Tensor partial = at::empty({batch, splits}, options);
  at::Tensor norms = at::empty({batch}, options), penalty = at::empty({}, options);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "norm_penalty", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const dim3 grid(static_cast<unsigned>(batch), static_cast<unsigned>(splits));
    sum_of_squares_kernel<scalar_t, acc_t><<<grid, kThreads, 0, stream>>>(
        grad.const_data_ptr<scalar_t>(), partial.mutable_data_ptr<acc_t>(), sample_size, chunk,
        splits);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    penalty_finalize_kernel<acc_t><<<1, kThreads, 0, stream>>>(
        partial.const_data_ptr<acc_t>(), norms.mutable_data_ptr<acc_t>(),
        penalty.mutable_data_ptr<acc_t>(), batch, splits, static_cast<acc_t>(weight),
        static_cast<acc_t>(center), one_sided);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {penalty, norms};
}

at::Tensor norm_penalty_backward_cuda(const at::Tensor& grad_in, const at::Tensor& norms_in,
                                      const std::optional<at::Tensor>& grad_penalty_in,
                                      const std::optional<at::Tensor>& grad_norms_in,
                                      double weight, double center, bool one_sided) {
  check_batch(grad_in, "grad");
  const char* op = "norm_penalty_backward";
  check_same_device(op, grad_in, "grad", norms_in, "norms");
  check_same_device(op, grad_in, "grad", grad_penalty_in.value_or(at::Tensor()), "grad_penalty");
  check_same_device(op, grad_in, "grad", grad_norms_in.value_or(at::Tensor()), "grad_norms");
  const c10::cuda::CUDAGuard guard(grad_in.device());
  at::Tensor grad = sample_major(grad_in);
  const int64_t batch = grad.size(0), n = grad.numel(), sample_size = n / batch;
  const auto acc_type = accumulation_type(grad.scalar_type());
  at::Tensor norms = norms_in.to(acc_type).contiguous();
  at::Tensor grad_penalty = grad_penalty_in.has_value()
                                ? grad_penalty_in->to(acc_type).contiguous()
                                : at::zeros({}, grad.options().dtype(acc_type));
  at::Tensor grad_norms;
  if (grad_norms_in.has_value()) grad_norms = grad_norms_in->to(acc_type).contiguous();
  at::Tensor out = output_like(grad);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(),
                                  "norm_penalty_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    norm_penalty_backward_kernel<scalar_t, acc_t><<<elementwise_blocks(n), kThreads, 0, stream>>>(
        grad.const_data_ptr<scalar_t>(), norms.const_data_ptr<acc_t>(),
        grad_penalty.const_data_ptr<acc_t>(),
        grad_norms.defined() ? grad_norms.const_data_ptr<acc_t>() : nullptr,
        out.mutable_data_ptr<scalar_t>(), n, sample_size, batch, static_cast<acc_t>(weight),
        static_cast<acc_t>(center), one_sided);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> bias_leaky_relu_cuda(const at::Tensor& x_in,
                                                        const std::optional<at::Tensor>& bias_in,
                                                        double negative_slope, int64_t channel_dim) {
  check_batch(x_in, "x");
  check_same_device("bias_leaky_relu", x_in, "x", bias_in.value_or(at::Tensor()), "bias");
  const c10::cuda::CUDAGuard guard(x_in.device());
  at::Tensor x = sample_major(x_in);
  at::Tensor out = output_like(x);
  at::Tensor mask = output_like(x, at::kBool);
  const int64_t n = x.numel(), channels = x.size(channel_dim), inner = x.stride(channel_dim);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_leaky_relu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor bias;
    if (bias_in.has_value()) bias = bias_in->to(x.scalar_type()).contiguous();
    bias_leaky_relu_kernel<scalar_t, acc_t><<<elementwise_blocks(n), kThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr,
        out.mutable_data_ptr<scalar_t>(), mask.mutable_data_ptr<bool>(), n, inner, channels,
        static_cast<acc_t>(negative_slope));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, mask};
}

at::Tensor leaky_relu_mask_backward_cuda(const at::Tensor& grad_in, const at::Tensor& mask_in,
                                         double negative_slope) {
  check_batch(grad_in, "grad");
  check_same_device("leaky_relu_mask_backward", grad_in, "grad", mask_in, "mask");
  const c10::cuda::CUDAGuard guard(grad_in.device());
  at::Tensor grad = grad_in, mask = mask_in;
  match_layout(grad, mask, "grad", "mask");
  at::Tensor out = output_like(grad);
  const int64_t n = grad.numel();
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(),
                                  "leaky_relu_mask_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    leaky_relu_mask_backward_kernel<scalar_t, acc_t><<<elementwise_blocks(n), kThreads, 0, stream>>>(
        grad.const_data_ptr<scalar_t>(), mask.const_data_ptr<bool>(),
        out.mutable_data_ptr<scalar_t>(), n, static_cast<acc_t>(negative_slope));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
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
