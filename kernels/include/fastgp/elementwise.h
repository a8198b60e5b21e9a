// Per-element math of the fastgp ops, shared by the CPU kernels (kernels/cpu) and the CUDA
// kernels (kernels/cuda): the CPU tests exercise the same formulas the GPU runs.
// `acc_t` is the accumulation type: float for fp32/fp16/bf16 inputs, double for fp64.
#pragma once

#if defined(__CUDACC__)
#define FASTGP_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FASTGP_HOST_DEVICE inline
#endif

namespace fastgp {

// x̂ = ε·real + (1 − ε)·fake
template <typename acc_t>
FASTGP_HOST_DEVICE acc_t interpolate(acc_t eps, acc_t real, acc_t fake) {
  return eps * real + (acc_t(1) - eps) * fake;
}

// d = n − c, or max(0, n − c) for the one-sided penalty
template <typename acc_t>
FASTGP_HOST_DEVICE acc_t penalty_deviation(acc_t norm, acc_t center, bool one_sided) {
  acc_t deviation = norm - center;
  return (one_sided && deviation < acc_t(0)) ? acc_t(0) : deviation;
}

// s = (2λ/B · d · p̄ + n̄) / n, and 0 at n = 0 (the subgradient fastgp defines there)
template <typename acc_t>
FASTGP_HOST_DEVICE acc_t penalty_scale(acc_t norm, acc_t center, bool one_sided, acc_t weight,
                                       long batch, acc_t grad_penalty, acc_t grad_norm) {
  if (!(norm > acc_t(0))) {
    return acc_t(0);
  }
  acc_t coefficient = acc_t(2) * weight / acc_t(batch) *
                      penalty_deviation(norm, center, one_sided) * grad_penalty + grad_norm;
  return coefficient / norm;
}

// out = y if y > 0 else α·y
template <typename acc_t>
FASTGP_HOST_DEVICE acc_t leaky_relu(acc_t y, acc_t negative_slope) {
  return y > acc_t(0) ? y : y * negative_slope;
}

// ∂x = g where the mask is set, else α·g (also the double backward)
template <typename acc_t>
FASTGP_HOST_DEVICE acc_t leaky_relu_grad(acc_t grad, bool positive, acc_t negative_slope) {
  return positive ? grad : grad * negative_slope;
}

}  // namespace fastgp
