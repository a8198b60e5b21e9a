// Per-element math of the fastgp ops, shared by the CPU kernels (kernels/cpu) and the CUDA
// kernels (kernels/cuda): the CPU tests exercise the same formulas the GPU runs.
// `acc_t` is the accumulation type: float for fp32/fp16/bf16 inputs, double for fp64.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__CUDACC__)
#define FASTGP_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FASTGP_HOST_DEVICE inline
#endif

namespace fastgp {

// a if take_a else b, chosen with bit masks instead of a branch. Activation signs are random, so
// on a CPU a branch mispredicts half the time (measured 2 ns vs 0.27 ns per element) and GCC does
// not vectorize the select of a byte load; on a GPU it is a few integer instructions in a
// memory-bound kernel. Bit-exact, unlike arithmetic blending.
template <typename T>
FASTGP_HOST_DEVICE T select_bits(uint8_t take_a, T a, T b) {
  using Bits = std::conditional_t<sizeof(T) == 8, uint64_t, uint32_t>;
  static_assert(sizeof(T) == sizeof(Bits), "select_bits needs a 32- or 64-bit type");
  Bits ua, ub;
  memcpy(&ua, &a, sizeof(T));
  memcpy(&ub, &b, sizeof(T));
  const Bits keep_a = Bits(0) - Bits(take_a);
  const Bits r = (ua & keep_a) | (ub & ~keep_a);
  T out;
  memcpy(&out, &r, sizeof(T));
  return out;
}

// x̂ = ε·real + (1 − ε)·fake
template <typename acc_t>
FASTGP_HOST_DEVICE acc_t interpolate(acc_t eps, acc_t real, acc_t fake) {
  return eps * real + (acc_t(1) - eps) * fake;
}

// ∂real = ε·g
template <typename acc_t>
FASTGP_HOST_DEVICE acc_t interpolate_grad_real(acc_t eps, acc_t grad) {
  return eps * grad;
}

// ∂fake = (1 − ε)·g
template <typename acc_t>
FASTGP_HOST_DEVICE acc_t interpolate_grad_fake(acc_t eps, acc_t grad) {
  return (acc_t(1) - eps) * grad;
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

// ∂g = s·g
template <typename acc_t>
FASTGP_HOST_DEVICE acc_t penalty_grad(acc_t scale, acc_t grad) {
  return scale * grad;
}

// mask = y > 0, stored as one byte
template <typename acc_t>
FASTGP_HOST_DEVICE uint8_t leaky_relu_mask(acc_t y) {
  return y > acc_t(0);
}

// out = y if y > 0 else α·y
template <typename acc_t>
FASTGP_HOST_DEVICE acc_t leaky_relu(acc_t y, acc_t negative_slope) {
  return select_bits<acc_t>(leaky_relu_mask(y), y, y * negative_slope);
}

// ∂x = g where the mask is set, else α·g (also the double backward)
template <typename acc_t>
FASTGP_HOST_DEVICE acc_t leaky_relu_grad(acc_t grad, uint8_t positive, acc_t negative_slope) {
  return select_bits<acc_t>(positive, grad, grad * negative_slope);
}

}  // namespace fastgp
