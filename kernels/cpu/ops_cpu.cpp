// CPU kernels of the fastgp ops (fastgp/ops/formulas.py has the formulas and the autograd).
//
// Every launcher prepares its arguments with include/fastgp/arguments.h, shared with the CUDA
// launchers: a batch as B samples of M elements laid out sample-major (contiguous or
// channels_last; anything else is copied once), outputs in that layout (the rule of
// include/fastgp/host.h, which the fake kernels share). The kernels walk it with
// at::parallel_for; inner loops run over contiguous runs with loop-invariant scalars so the
// compiler vectorizes them, and the per-element math is that of include/fastgp/elementwise.h,
// the functions the CUDA kernels call.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <tuple>
#include <vector>

#include "fastgp/arguments.h"
#include "fastgp/elementwise.h"

namespace fastgp {
namespace {

constexpr int64_t kElementGrain = 32768;  // elements per parallel task: ~100 µs of work
constexpr int64_t kReductionChunk = 65536;  // elements of one sample summed by one task

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

at::Tensor interpolate_cpu(const at::Tensor& real, const at::Tensor& fake, const at::Tensor& eps) {
  const InterpolateArgs a = prepare_interpolate(real, fake, eps);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.real.scalar_type(), "interpolate", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* r = a.real.const_data_ptr<scalar_t>();
    const scalar_t* f = a.fake.const_data_ptr<scalar_t>();
    const scalar_t* e = a.eps.const_data_ptr<scalar_t>();
    scalar_t* o = a.out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, a.n, kElementGrain, [&](int64_t lo, int64_t hi) {
      for_each_sample_run(lo, hi, a.sample_size, [&](int64_t sample, int64_t begin, int64_t end) {
        const acc_t weight = static_cast<acc_t>(e[sample]);
        for (int64_t j = begin; j < end; ++j) {
          o[j] = static_cast<scalar_t>(
              interpolate<acc_t>(weight, static_cast<acc_t>(r[j]), static_cast<acc_t>(f[j])));
        }
      });
    });
  });
  return a.out;
}

std::tuple<at::Tensor, at::Tensor> interpolate_backward_cpu(const at::Tensor& grad,
                                                            const at::Tensor& eps) {
  const InterpolateBackwardArgs a = prepare_interpolate_backward(grad, eps);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.grad.scalar_type(),
                                  "interpolate_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g = a.grad.const_data_ptr<scalar_t>();
    const scalar_t* e = a.eps.const_data_ptr<scalar_t>();
    scalar_t* gr = a.grad_real.mutable_data_ptr<scalar_t>();
    scalar_t* gf = a.grad_fake.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, a.n, kElementGrain, [&](int64_t lo, int64_t hi) {
      for_each_sample_run(lo, hi, a.sample_size, [&](int64_t sample, int64_t begin, int64_t end) {
        const acc_t weight = static_cast<acc_t>(e[sample]);
        for (int64_t j = begin; j < end; ++j) {
          const acc_t value = static_cast<acc_t>(g[j]);
          gr[j] = static_cast<scalar_t>(interpolate_grad_real<acc_t>(weight, value));
          gf[j] = static_cast<scalar_t>(interpolate_grad_fake<acc_t>(weight, value));
        }
      });
    });
  });
  return {a.grad_real, a.grad_fake};
}

std::tuple<at::Tensor, at::Tensor> norm_penalty_cpu(const at::Tensor& grad, double weight,
                                                    double center, bool one_sided) {
  const NormPenaltyArgs a = prepare_norm_penalty(grad);
  const int64_t batch = a.batch, sample_size = a.sample_size;
  // Split reduction: task (sample, chunk) sums one chunk of one sample, so a batch of a few
  // huge samples is as parallel as many small ones; partial sums are combined in order.
  const int64_t chunks = std::max<int64_t>(1, (sample_size + kReductionChunk - 1) / kReductionChunk);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.grad.scalar_type(), "norm_penalty", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g = a.grad.const_data_ptr<scalar_t>();
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
    acc_t* norm = a.norms.mutable_data_ptr<acc_t>();
    acc_t total = 0;
    for (int64_t sample = 0; sample < batch; ++sample) {
      acc_t squares = 0;
      for (int64_t chunk = 0; chunk < chunks; ++chunk) squares += partial[sample * chunks + chunk];
      norm[sample] = std::sqrt(squares);
      const acc_t deviation = penalty_deviation<acc_t>(norm[sample], static_cast<acc_t>(center), one_sided);
      total += deviation * deviation;
    }
    *a.penalty.mutable_data_ptr<acc_t>() = static_cast<acc_t>(weight) * total / static_cast<acc_t>(batch);
  });
  return {a.penalty, a.norms};
}

at::Tensor norm_penalty_backward_cpu(const at::Tensor& grad, const at::Tensor& norms,
                                     const std::optional<at::Tensor>& grad_penalty,
                                     const std::optional<at::Tensor>& grad_norms, double weight,
                                     double center, bool one_sided) {
  const NormPenaltyBackwardArgs a = prepare_norm_penalty_backward(grad, norms, grad_penalty, grad_norms);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.grad.scalar_type(),
                                  "norm_penalty_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* norm = a.norms.const_data_ptr<acc_t>();
    const acc_t* norm_upstream = a.grad_norms.defined() ? a.grad_norms.const_data_ptr<acc_t>() : nullptr;
    const acc_t upstream = *a.grad_penalty.const_data_ptr<acc_t>();
    std::vector<acc_t> scale(a.batch);
    for (int64_t sample = 0; sample < a.batch; ++sample) {
      scale[sample] = penalty_scale<acc_t>(norm[sample], static_cast<acc_t>(center), one_sided,
                                           static_cast<acc_t>(weight), a.batch, upstream,
                                           norm_upstream ? norm_upstream[sample] : acc_t(0));
    }
    const scalar_t* g = a.grad.const_data_ptr<scalar_t>();
    scalar_t* o = a.out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, a.n, kElementGrain, [&](int64_t lo, int64_t hi) {
      for_each_sample_run(lo, hi, a.sample_size, [&](int64_t sample, int64_t begin, int64_t end) {
        const acc_t s = scale[sample];
        for (int64_t j = begin; j < end; ++j) {
          o[j] = static_cast<scalar_t>(penalty_grad<acc_t>(s, static_cast<acc_t>(g[j])));
        }
      });
    });
  });
  return a.out;
}

std::tuple<at::Tensor, at::Tensor> bias_leaky_relu_cpu(const at::Tensor& x,
                                                       const std::optional<at::Tensor>& bias,
                                                       double negative_slope, int64_t channel_dim) {
  const BiasLeakyReluArgs a = prepare_bias_leaky_relu(x, bias, channel_dim);
  if (a.n == 0) return {a.out, a.mask};  // nothing to write, and the loops below divide by C
  const int64_t n = a.n, channels = a.channels, inner = a.inner;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "bias_leaky_relu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* b = a.bias.defined() ? a.bias.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* xs = a.x.const_data_ptr<scalar_t>();
    scalar_t* o = a.out.mutable_data_ptr<scalar_t>();
    uint8_t* m = reinterpret_cast<uint8_t*>(a.mask.mutable_data_ptr<bool>());
    const acc_t slope = static_cast<acc_t>(negative_slope);
    // The mask's byte stores may alias anything, so the pointers are passed by value: read
    // through a capture, they would be reloaded after every store (measured 2x slower under
    // OpenMP, whose outlined region reads captures through a pointer).
    auto run = [slope](const scalar_t* __restrict x_run, scalar_t* __restrict o_run,
                       uint8_t* __restrict m_run, int64_t count, acc_t shift) {
      for (int64_t j = 0; j < count; ++j) {
        const acc_t y = static_cast<acc_t>(x_run[j]) + shift;
        o_run[j] = static_cast<scalar_t>(leaky_relu<acc_t>(y, slope));
        m_run[j] = leaky_relu_mask<acc_t>(y);
      }
    };
    if (inner == 1 && b) {
      // Channels innermost (channels_last, or Linear's last dim): rows of C, bias varies in j.
      auto run_rows = [slope](const scalar_t* __restrict x_run, scalar_t* __restrict o_run,
                              uint8_t* __restrict m_run, const scalar_t* __restrict bias_run,
                              int64_t rows, int64_t width) {
        for (int64_t row = 0; row < rows; ++row) {
          for (int64_t c = 0; c < width; ++c) {
            const int64_t j = row * width + c;
            const acc_t y = static_cast<acc_t>(x_run[j]) + static_cast<acc_t>(bias_run[c]);
            o_run[j] = static_cast<scalar_t>(leaky_relu<acc_t>(y, slope));
            m_run[j] = leaky_relu_mask<acc_t>(y);
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
  return {a.out, a.mask};
}

at::Tensor leaky_relu_mask_backward_cpu(const at::Tensor& grad, const at::Tensor& mask,
                                        double negative_slope) {
  const MaskBackwardArgs a = prepare_mask_backward(grad, mask);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.grad.scalar_type(),
                                  "leaky_relu_mask_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g = a.grad.const_data_ptr<scalar_t>();
    const uint8_t* m = reinterpret_cast<const uint8_t*>(a.mask.const_data_ptr<bool>());
    scalar_t* o = a.out.mutable_data_ptr<scalar_t>();
    const acc_t slope = static_cast<acc_t>(negative_slope);
    at::parallel_for(0, a.n, kElementGrain, [&](int64_t lo, int64_t hi) {
      for (int64_t j = lo; j < hi; ++j) {
        o[j] = static_cast<scalar_t>(leaky_relu_grad<acc_t>(static_cast<acc_t>(g[j]), m[j], slope));
      }
    });
  });
  return a.out;
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
