// CPU kernels of the fastgp ops (see fastgp/ops/*_op.py for the formulas and the autograd).
//
// Every kernel sees a batch as B samples of M elements laid out sample-major (contiguous or
// channels_last; anything else is copied once), writes its outputs in that layout (the rule of
// include/fastgp/host.h, which the fake kernels share) and walks it with at::parallel_for.
// Inner loops run over contiguous runs with loop-invariant scalars so the compiler vectorizes
// them; the per-element math comes from include/fastgp/elementwise.h, shared with the CUDA
// kernels.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Optional.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <vector>

#include "fastgp/elementwise.h"
#include "fastgp/host.h"

namespace fastgp {
namespace {

constexpr int64_t kElementGrain = 32768;  // elements per parallel task: ~100 µs of work
constexpr int64_t kReductionChunk = 65536;  // elements of one sample summed by one task

// a if take_a else b, chosen with bit masks instead of a branch: masks of activations are
// random, so a branch mispredicts half the time (measured 2 ns vs 0.27 ns per element), and
// GCC does not vectorize the select of a bool load. Bit-exact, unlike arithmetic blending.
template <typename T>
inline T select_bits(uint8_t take_a, T a, T b) {
  using Bits = std::conditional_t<sizeof(T) == 8, uint64_t, uint32_t>;
  static_assert(sizeof(T) == sizeof(Bits), "select_bits needs a 32- or 64-bit type");
  Bits ua, ub;
  std::memcpy(&ua, &a, sizeof(T));
  std::memcpy(&ub, &b, sizeof(T));
  const Bits keep_a = Bits(0) - Bits(take_a);
  const Bits r = (ua & keep_a) | (ub & ~keep_a);
  T out;
  std::memcpy(&out, &r, sizeof(T));
  return out;
}

// Calls body(sample, begin, end) for each run [begin, end) of one sample inside [lo, hi).
template <typename Body>
void for_each_sample_run(int64_t lo, int64_t hi, int64_t sample_size, const Body& body) {
  int64_t i = lo;
  while (i < hi) {
    const int64_t sample = i / sample_size;
    const int64_t run_end = std::min(hi, (sample + 1) * sample_size);
    body(sample, i, run_end);
    i = run_end;
  }
}

// Σ x² with kLanes independent accumulators: without them the loop is one serial dependency
// chain (floating-point addition may not be reordered), with them the compiler vectorizes it.
template <typename scalar_t, typename acc_t>
acc_t sum_of_squares(const scalar_t* x, int64_t size) {
  constexpr int64_t kLanes = 16;
  acc_t lanes[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= size; j += kLanes) {
    for (int64_t k = 0; k < kLanes; ++k) {
      const acc_t value = static_cast<acc_t>(x[j + k]);
      lanes[k] += value * value;
    }
  }
  acc_t sum = 0;
  for (; j < size; ++j) {
    const acc_t value = static_cast<acc_t>(x[j]);
    sum += value * value;
  }
  for (int64_t k = 0; k < kLanes; ++k) sum += lanes[k];
  return sum;
}

at::Tensor interpolate_cpu(const at::Tensor& real_in, const at::Tensor& fake_in,
                           const at::Tensor& eps_in) {
  check_batch(real_in, "real");
  at::Tensor real = real_in, fake = fake_in;
  match_layout(real, fake, "real", "fake");
  at::Tensor eps = eps_in.to(real.scalar_type()).contiguous();
  at::Tensor out = output_like(real);
  const int64_t n = real.numel(), sample_size = n / real.size(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, real.scalar_type(), "interpolate", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* r = real.const_data_ptr<scalar_t>();
    const scalar_t* f = fake.const_data_ptr<scalar_t>();
    const scalar_t* e = eps.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n, kElementGrain, [&](int64_t lo, int64_t hi) {
      for_each_sample_run(lo, hi, sample_size, [&](int64_t sample, int64_t begin, int64_t end) {
        const acc_t weight = static_cast<acc_t>(e[sample]);
        for (int64_t j = begin; j < end; ++j) {
          o[j] = static_cast<scalar_t>(
              interpolate<acc_t>(weight, static_cast<acc_t>(r[j]), static_cast<acc_t>(f[j])));
        }
      });
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> interpolate_backward_cpu(const at::Tensor& grad_in,
                                                            const at::Tensor& eps_in) {
  check_batch(grad_in, "grad");
  at::Tensor grad = sample_major(grad_in);
  at::Tensor eps = eps_in.to(grad.scalar_type()).contiguous();
  at::Tensor grad_real = output_like(grad), grad_fake = output_like(grad);
  const int64_t n = grad.numel(), sample_size = n / grad.size(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(),
                                  "interpolate_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const scalar_t* e = eps.const_data_ptr<scalar_t>();
    scalar_t* gr = grad_real.mutable_data_ptr<scalar_t>();
    scalar_t* gf = grad_fake.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n, kElementGrain, [&](int64_t lo, int64_t hi) {
      for_each_sample_run(lo, hi, sample_size, [&](int64_t sample, int64_t begin, int64_t end) {
        const acc_t weight = static_cast<acc_t>(e[sample]);
        for (int64_t j = begin; j < end; ++j) {
          const acc_t value = static_cast<acc_t>(g[j]);
          gr[j] = static_cast<scalar_t>(weight * value);
          gf[j] = static_cast<scalar_t>((acc_t(1) - weight) * value);
        }
      });
    });
  });
  return {grad_real, grad_fake};
}

std::tuple<at::Tensor, at::Tensor> norm_penalty_cpu(const at::Tensor& grad_in, double weight,
                                                    double center, bool one_sided) {
  check_batch(grad_in, "grad");
  at::Tensor grad = sample_major(grad_in);
  const int64_t batch = grad.size(0), sample_size = grad.numel() / batch;
  const auto acc_type = accumulation_type(grad.scalar_type());
  at::Tensor norms = at::empty({batch}, grad.options().dtype(acc_type));
  at::Tensor penalty = at::empty({}, grad.options().dtype(acc_type));
  // Split reduction: task (sample, chunk) sums one chunk of one sample, so a batch of a few
  // huge samples is as parallel as many small ones; partial sums are combined in order.
  const int64_t chunks = std::max<int64_t>(1, (sample_size + kReductionChunk - 1) / kReductionChunk);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "norm_penalty", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    std::vector<acc_t> partial(batch * chunks, acc_t(0));
    // A sample without elements (M = 0) has one empty chunk: norm 0, as on every backend.
    const int64_t task_size = std::max<int64_t>(1, std::min(sample_size, kReductionChunk));
    const int64_t grain = std::max<int64_t>(1, kElementGrain / task_size);
    at::parallel_for(0, batch * chunks, grain, [&](int64_t lo, int64_t hi) {
      for (int64_t task = lo; task < hi; ++task) {
        const int64_t sample = task / chunks, chunk = task % chunks;
        const int64_t begin = sample * sample_size + chunk * kReductionChunk;
        const int64_t end = sample * sample_size + std::min(sample_size, (chunk + 1) * kReductionChunk);
        partial[task] = sum_of_squares<scalar_t, acc_t>(g + begin, end - begin);
      }
    });
    acc_t* norm = norms.mutable_data_ptr<acc_t>();
    acc_t total = 0;
    for (int64_t sample = 0; sample < batch; ++sample) {
      acc_t squares = 0;
      for (int64_t chunk = 0; chunk < chunks; ++chunk) squares += partial[sample * chunks + chunk];
      norm[sample] = std::sqrt(squares);
      const acc_t deviation = penalty_deviation<acc_t>(norm[sample], static_cast<acc_t>(center), one_sided);
      total += deviation * deviation;
    }
    *penalty.mutable_data_ptr<acc_t>() = static_cast<acc_t>(weight) * total / static_cast<acc_t>(batch);
  });
  return {penalty, norms};
}

at::Tensor norm_penalty_backward_cpu(const at::Tensor& grad_in, const at::Tensor& norms_in,
                                     const std::optional<at::Tensor>& grad_penalty,
                                     const std::optional<at::Tensor>& grad_norms_in, double weight,
                                     double center, bool one_sided) {
  check_batch(grad_in, "grad");
  at::Tensor grad = sample_major(grad_in);
  const int64_t batch = grad.size(0), n = grad.numel(), sample_size = n / batch;
  const auto acc_type = accumulation_type(grad.scalar_type());
  at::Tensor norms = norms_in.to(acc_type).contiguous();
  const double upstream = grad_penalty.has_value() ? grad_penalty->item<double>() : 0.0;
  at::Tensor grad_norms;
  if (grad_norms_in.has_value()) grad_norms = grad_norms_in->to(acc_type).contiguous();
  at::Tensor out = output_like(grad);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(),
                                  "norm_penalty_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* norm = norms.const_data_ptr<acc_t>();
    const acc_t* norm_upstream = grad_norms.defined() ? grad_norms.const_data_ptr<acc_t>() : nullptr;
    std::vector<acc_t> scale(batch);
    for (int64_t sample = 0; sample < batch; ++sample) {
      scale[sample] = penalty_scale<acc_t>(norm[sample], static_cast<acc_t>(center), one_sided,
                                           static_cast<acc_t>(weight), batch,
                                           static_cast<acc_t>(upstream),
                                           norm_upstream ? norm_upstream[sample] : acc_t(0));
    }
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n, kElementGrain, [&](int64_t lo, int64_t hi) {
      for_each_sample_run(lo, hi, sample_size, [&](int64_t sample, int64_t begin, int64_t end) {
        const acc_t s = scale[sample];
        for (int64_t j = begin; j < end; ++j) o[j] = static_cast<scalar_t>(s * static_cast<acc_t>(g[j]));
      });
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> bias_leaky_relu_cpu(const at::Tensor& x_in,
                                                       const std::optional<at::Tensor>& bias_in,
                                                       double negative_slope, int64_t channel_dim) {
  check_batch(x_in, "x");
  at::Tensor x = sample_major(x_in);
  at::Tensor out = output_like(x);
  at::Tensor mask = output_like(x, at::kBool);
  const int64_t n = x.numel();
  if (n == 0) return {out, mask};  // nothing to write, and the loops below divide by C
  // A dense tensor is [outer, C, inner] in memory, inner = the channel dim's stride.
  const int64_t channels = x.size(channel_dim), inner = x.stride(channel_dim);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_leaky_relu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor bias;
    if (bias_in.has_value()) bias = bias_in->to(x.scalar_type()).contiguous();
    const scalar_t* b = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* xs = x.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    uint8_t* m = reinterpret_cast<uint8_t*>(mask.mutable_data_ptr<bool>());
    const acc_t slope = static_cast<acc_t>(negative_slope);
    // The mask's byte stores may alias anything, so the pointers are passed by value: read
    // through a capture, they would be reloaded after every store (measured 2x slower under
    // OpenMP, whose outlined region reads captures through a pointer).
    auto run = [slope](const scalar_t* __restrict x_run, scalar_t* __restrict o_run,
                       uint8_t* __restrict m_run, int64_t count, acc_t shift) {
      for (int64_t j = 0; j < count; ++j) {
        const acc_t y = static_cast<acc_t>(x_run[j]) + shift;
        const uint8_t positive = y > acc_t(0);
        o_run[j] = static_cast<scalar_t>(select_bits<acc_t>(positive, y, y * slope));
        m_run[j] = positive;
      }
    };
    if (inner == 1 && b) {
      // Channels innermost (channels_last, or Linear's last dim): rows of C, bias varies in j.
      auto run_rows = [slope](const scalar_t* __restrict x_run, scalar_t* __restrict o_run,
                              uint8_t* __restrict m_run, const scalar_t* __restrict bias,
                              int64_t rows, int64_t width) {
        for (int64_t row = 0; row < rows; ++row) {
          for (int64_t c = 0; c < width; ++c) {
            const int64_t j = row * width + c;
            const acc_t y = static_cast<acc_t>(x_run[j]) + static_cast<acc_t>(bias[c]);
            const uint8_t positive = y > acc_t(0);
            o_run[j] = static_cast<scalar_t>(select_bits<acc_t>(positive, y, y * slope));
            m_run[j] = positive;
          }
        }
      };
      at::parallel_for(0, n / channels, std::max<int64_t>(1, kElementGrain / channels),
                       [&](int64_t lo, int64_t hi) {
        const int64_t start = lo * channels;
        run_rows(xs + start, o + start, m + start, b, hi - lo, channels);
      });
      return;
    }
    const int64_t rows = n / inner;  // (outer, channel) pairs
    at::parallel_for(0, rows, std::max<int64_t>(1, kElementGrain / inner), [&](int64_t lo, int64_t hi) {
      for (int64_t row = lo; row < hi; ++row) {
        const acc_t shift = b ? static_cast<acc_t>(b[row % channels]) : acc_t(0);
        run(xs + row * inner, o + row * inner, m + row * inner, inner, shift);
      }
    });
  });
  return {out, mask};
}

at::Tensor leaky_relu_mask_backward_cpu(const at::Tensor& grad_in, const at::Tensor& mask_in,
                                        double negative_slope) {
  check_batch(grad_in, "grad");
  at::Tensor grad = grad_in, mask = mask_in;
  match_layout(grad, mask, "grad", "mask");
  at::Tensor out = output_like(grad);
  const int64_t n = grad.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(),
                                  "leaky_relu_mask_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const uint8_t* m = reinterpret_cast<const uint8_t*>(mask.const_data_ptr<bool>());
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const acc_t slope = static_cast<acc_t>(negative_slope);
    at::parallel_for(0, n, kElementGrain, [&](int64_t lo, int64_t hi) {
      for (int64_t j = lo; j < hi; ++j) {
        const acc_t grad_j = static_cast<acc_t>(g[j]);
        o[j] = static_cast<scalar_t>(select_bits<acc_t>(m[j], grad_j, grad_j * slope));
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastgp_native, CPU, m) {
  m.impl("interpolate", &interpolate_cpu);
  m.impl("interpolate_backward", &interpolate_backward_cpu);
  m.impl("norm_penalty", &norm_penalty_cpu);
  m.impl("norm_penalty_backward", &norm_penalty_backward_cpu);
  m.impl("bias_leaky_relu", &bias_leaky_relu_cpu);
  m.impl("leaky_relu_mask_backward", &leaky_relu_mask_backward_cpu);
}

}  // namespace fastgp
