// Schemas of the native ops, defined once; the CPU kernels register their implementations in
// cpu/ops_cpu.cpp (and CUDA kernels, when built, in cuda/). Python reaches them as
// torch.ops.fastgp_native.*; fastgp/ops/native.py registers the shared fake kernels and autograd
// formulas of fastgp/ops/formulas.py on these same ops (the contract: fastgp/ops/README.md).
#include <Python.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

#include "fastgp/host.h"

namespace fastgp {
namespace {

bool has_cuda() {
#ifdef FASTGP_WITH_CUDA
  return true;
#else
  return false;
#endif
}

// (splits, chunk) of the CUDA norm reduction (split_plan in include/fastgp/host.h): the launch
// arithmetic of a kernel that only runs on a GPU, exposed so that tests check it on any build.
std::vector<int64_t> cuda_split_plan(int64_t batch, int64_t sample_size, int64_t target_blocks) {
  const SplitPlan plan = split_plan(batch, sample_size, target_blocks);
  return {plan.splits, plan.chunk};
}

}  // namespace

TORCH_LIBRARY(fastgp_native, m) {
  m.def("interpolate(Tensor real, Tensor fake, Tensor eps) -> Tensor");
  m.def("interpolate_backward(Tensor grad, Tensor eps) -> (Tensor, Tensor)");
  m.def("norm_penalty(Tensor grad, float weight, float center, bool one_sided) -> (Tensor, Tensor)");
  m.def("norm_penalty_backward(Tensor grad, Tensor norms, Tensor? grad_penalty, "
        "Tensor? grad_norms, float weight, float center, bool one_sided) -> Tensor");
  m.def("bias_leaky_relu(Tensor x, Tensor? bias, float negative_slope, int channel_dim) "
        "-> (Tensor, Tensor)");
  m.def("leaky_relu_mask_backward(Tensor grad, Tensor mask, float negative_slope) -> Tensor");
  m.def("has_cuda() -> bool", &has_cuda);
  m.def("cuda_split_plan(int batch, int sample_size, int target_blocks) -> int[]",
        &cuda_split_plan);
}

}  // namespace fastgp

// `import fastgp._C` loads this library, which registers the ops above; the module is empty.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
