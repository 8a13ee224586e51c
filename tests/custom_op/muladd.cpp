// A custom TorchScript operator for tsrepo's tests: tsrepo_test::muladd(a, b, c) = a * b + c.
// Built by the tests themselves (g++ with torch's headers), since torchvision's wheel here cannot load.
#include <ATen/ATen.h>
#include <torch/library.h>

at::Tensor muladd(const at::Tensor& a, const at::Tensor& b, double c) { return a * b + c; }

TORCH_LIBRARY(tsrepo_test, m) { m.def("muladd(Tensor a, Tensor b, float c) -> Tensor"); }

TORCH_LIBRARY_IMPL(tsrepo_test, CPU, m) { m.impl("muladd", &muladd); }
