// The host-side setup of every native op, shared by its CPU (cpu/ops_cpu.cpp) and CUDA
// (cuda/ops_cuda.cu) launchers: argument checks, the sample-major layout of the inputs, the
// outputs in the layout rule of host.h, and the sizes the kernels loop over. A launcher prepares
// its arguments here, then only walks memory: the two devices cannot disagree on what an op
// accepts or on the strides it returns.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <cstdint>
#include <optional>

#include "fastgp/host.h"

namespace fastgp {

// x̂ = ε·real + (1 − ε)·fake over n elements, sample_size per sample.
struct InterpolateArgs {
  at::Tensor real, fake, eps, out;
  int64_t n, sample_size;
};

inline InterpolateArgs prepare_interpolate(const at::Tensor& real, const at::Tensor& fake,
                                           const at::Tensor& eps) {
  check_batch(real, "real");
  check_same_device("interpolate", real, "real", fake, "fake");
  check_same_device("interpolate", real, "real", eps, "eps");
  InterpolateArgs a{real, fake, {}, {}, 0, 0};
  match_layout(a.real, a.fake, "real", "fake");
  a.eps = eps.to(a.real.scalar_type()).contiguous();
  a.out = output_like(a.real);
  a.n = a.real.numel();
  a.sample_size = a.n / a.real.size(0);
  return a;
}

// ∂real = ε·g and ∂fake = (1 − ε)·g from one read of g.
struct InterpolateBackwardArgs {
  at::Tensor grad, eps, grad_real, grad_fake;
  int64_t n, sample_size;
};

inline InterpolateBackwardArgs prepare_interpolate_backward(const at::Tensor& grad,
                                                            const at::Tensor& eps) {
  check_batch(grad, "grad");
  check_same_device("interpolate_backward", grad, "grad", eps, "eps");
  InterpolateBackwardArgs a;
  a.grad = sample_major(grad);
  a.eps = eps.to(a.grad.scalar_type()).contiguous();
  a.grad_real = output_like(a.grad);
  a.grad_fake = output_like(a.grad);
  a.n = a.grad.numel();
  a.sample_size = a.n / a.grad.size(0);
  return a;
}

// n_i = ‖g_i‖₂ and λ/B·Σ d_i²: outputs in the accumulation type (fp32, fp64 for fp64 inputs).
struct NormPenaltyArgs {
  at::Tensor grad, norms, penalty;
  int64_t batch, sample_size;
};

inline NormPenaltyArgs prepare_norm_penalty(const at::Tensor& grad) {
  check_batch(grad, "grad");
  NormPenaltyArgs a;
  a.grad = sample_major(grad);
  a.batch = a.grad.size(0);
  a.sample_size = a.grad.numel() / a.batch;
  const auto options = a.grad.options().dtype(accumulation_type(a.grad.scalar_type()));
  a.norms = at::empty({a.batch}, options);
  a.penalty = at::empty({}, options);
  return a;
}

// ∂g_i = s_i·g_i: the upstream gradients as dense vectors in the accumulation type, an absent
// penalty gradient as 0 (a device scalar, so that no launcher reads it back to the host).
struct NormPenaltyBackwardArgs {
  at::Tensor grad, norms, grad_penalty, grad_norms, out;  // grad_norms undefined when absent
  int64_t batch, n, sample_size;
};

inline NormPenaltyBackwardArgs prepare_norm_penalty_backward(
    const at::Tensor& grad, const at::Tensor& norms, const std::optional<at::Tensor>& grad_penalty,
    const std::optional<at::Tensor>& grad_norms) {
  check_batch(grad, "grad");
  const char* op = "norm_penalty_backward";
  check_same_device(op, grad, "grad", norms, "norms");
  check_same_device(op, grad, "grad", grad_penalty.value_or(at::Tensor()), "grad_penalty");
  check_same_device(op, grad, "grad", grad_norms.value_or(at::Tensor()), "grad_norms");
  NormPenaltyBackwardArgs a;
  a.grad = sample_major(grad);
  a.batch = a.grad.size(0);
  a.n = a.grad.numel();
  a.sample_size = a.n / a.batch;
  const auto acc_type = accumulation_type(a.grad.scalar_type());
  a.norms = norms.to(acc_type).contiguous();
  a.grad_penalty = grad_penalty.has_value() ? grad_penalty->to(acc_type).contiguous()
                                            : at::zeros({}, a.grad.options().dtype(acc_type));
  if (grad_norms.has_value()) a.grad_norms = grad_norms->to(acc_type).contiguous();
  a.out = output_like(a.grad);
  return a;
}

// out = leaky_relu(x + b) and its mask. A dense tensor is [outer, C, inner] in memory,
// inner = the channel dim's stride; bias is undefined when absent.
struct BiasLeakyReluArgs {
  at::Tensor x, bias, out, mask;
  int64_t n, channels, inner;
};

inline BiasLeakyReluArgs prepare_bias_leaky_relu(const at::Tensor& x,
                                                 const std::optional<at::Tensor>& bias,
                                                 int64_t channel_dim) {
  check_batch(x, "x");
  check_same_device("bias_leaky_relu", x, "x", bias.value_or(at::Tensor()), "bias");
  BiasLeakyReluArgs a;
  a.x = sample_major(x);
  if (bias.has_value()) a.bias = bias->to(a.x.scalar_type()).contiguous();
  a.out = output_like(a.x);
  a.mask = output_like(a.x, at::kBool);
  a.n = a.x.numel();
  a.channels = a.x.size(channel_dim);
  a.inner = a.x.stride(channel_dim);
  return a;
}

// ∂x = g where the mask is set, α·g elsewhere; the mask read in the gradient's layout.
struct MaskBackwardArgs {
  at::Tensor grad, mask, out;
  int64_t n;
};

inline MaskBackwardArgs prepare_mask_backward(const at::Tensor& grad, const at::Tensor& mask) {
  check_batch(grad, "grad");
  check_same_device("leaky_relu_mask_backward", grad, "grad", mask, "mask");
  MaskBackwardArgs a{grad, mask, {}, 0};
  match_layout(a.grad, a.mask, "grad", "mask");
  a.out = output_like(a.grad);
  a.n = a.grad.numel();
  return a;
}

}  // namespace fastgp
