// Schemas of the native ops, defined once; the CPU kernels register their implementations in
// cpu/ops_cpu.cpp (and CUDA kernels, when built, in cuda/). Python reaches them as
// torch.ops.fastgp_native.*; fastgp/ops/*_op.py wraps them with fake kernels and autograd.
#include <Python.h>
#include <torch/library.h>

namespace fastgp {
namespace {

bool has_cuda() {
#ifdef FASTGP_WITH_CUDA
  return true;
#else
  return false;
#endif
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
}

}  // namespace fastgp

// `import fastgp._C` loads this library, which registers the ops above; the module is empty.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
