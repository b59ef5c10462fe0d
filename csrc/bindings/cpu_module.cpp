// pybind11 bindings of lamina._C.  Arrays arrive as raw addresses
// (ndarray.ctypes.data) plus sizes and a dtype name; lamina/ops validates
// dtype, shape and contiguity before calling, so nothing here converts.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "../cpu/kernels.h"

namespace py = pybind11;
using namespace lamina::cpu;

namespace {

template <typename T>
T* ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

[[noreturn]] void bad_dtype(const std::string& fn, const std::string& dtype) {
  throw std::invalid_argument(fn + ": expected dtype float32 or float64, received " + dtype);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "lamina CPU kernels (C++/OpenMP)";

  m.def(
      "gelu_forward",
      [](uintptr_t y, uintptr_t x, int64_t n, bool tanh_approx, const std::string& dtype) {
        if (dtype == "float32") return gelu_forward(ptr<float>(y), ptr<const float>(x), n, tanh_approx);
        if (dtype == "float64") return gelu_forward(ptr<double>(y), ptr<const double>(x), n, tanh_approx);
        bad_dtype("gelu_forward", dtype);
      },
      py::arg("y"), py::arg("x"), py::arg("n"), py::arg("tanh_approx"), py::arg("dtype"),
      py::call_guard<py::gil_scoped_release>());

  m.def(
      "gelu_backward",
      [](uintptr_t dx, uintptr_t dy, uintptr_t x, int64_t n, bool tanh_approx, const std::string& dtype) {
        if (dtype == "float32")
          return gelu_backward(ptr<float>(dx), ptr<const float>(dy), ptr<const float>(x), n, tanh_approx);
        if (dtype == "float64")
          return gelu_backward(ptr<double>(dx), ptr<const double>(dy), ptr<const double>(x), n, tanh_approx);
        bad_dtype("gelu_backward", dtype);
      },
      py::arg("dx"), py::arg("dy"), py::arg("x"), py::arg("n"), py::arg("tanh_approx"), py::arg("dtype"),
      py::call_guard<py::gil_scoped_release>());

  m.def(
      "softmax_xent",
      [](uintptr_t loss, uintptr_t dlogits, uintptr_t logits, uintptr_t labels, int64_t n, int64_t c,
         double smoothing, double grad_scale, const std::string& dtype) {
        const auto* lab = ptr<const int64_t>(labels);
        if (dtype == "float32")
          return softmax_xent(ptr<float>(loss), ptr<float>(dlogits), ptr<const float>(logits), lab, n, c, smoothing,
                              grad_scale);
        if (dtype == "float64")
          return softmax_xent(ptr<double>(loss), ptr<double>(dlogits), ptr<const double>(logits), lab, n, c,
                              smoothing, grad_scale);
        bad_dtype("softmax_xent", dtype);
      },
      py::arg("loss"), py::arg("dlogits"), py::arg("logits"), py::arg("labels"), py::arg("n"), py::arg("c"),
      py::arg("smoothing"), py::arg("grad_scale"), py::arg("dtype"), py::call_guard<py::gil_scoped_release>());

  m.def("num_threads", []() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
  });
  m.def("set_num_threads", [](int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
  });
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
  m.attr("kernels") = py::make_tuple("gelu_forward", "gelu_backward", "softmax_xent");
}
