// pybind11 bindings of lamina._C.  Arrays arrive as raw addresses
// (data_ptr below) plus sizes and a dtype name; lamina/ops validates
// dtype, shape and contiguity before calling, so nothing here converts.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>

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

// (n, c, h, w, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow), as lamina/ops passes it.
using GeometryTuple = std::array<int64_t, 14>;

ConvGeometry geometry(const GeometryTuple& t) {
  for (int64_t v : t)
    if (v < 0) throw std::invalid_argument("lamina._C: negative convolution geometry");
  return ConvGeometry{t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11], t[12], t[13]};
}

ConvGeometry direct_geometry(const std::string& fn, const GeometryTuple& t) {
  if (!conv_direct_supported()) throw std::runtime_error("lamina._C." + fn + ": this CPU lacks AVX2 or FMA");
  const ConvGeometry g = geometry(t);
  if (!conv_direct_geometry_ok(g))
    throw std::invalid_argument("lamina._C." + fn + ": geometry outside the direct kernel's domain (stride 1, "
                                "padding at most the dilated kernel span)");
  return g;
}

int direct_variant(const std::string& fn, const std::string& name) {
  if (name == "auto") return kAuto;
  if (name == "pixels") return kPixels;
  if (name == "channels") return kChannels;
  throw std::invalid_argument("lamina._C." + fn + ": expected variant 'auto', 'pixels' or 'channels', received '" +
                              name + "'");
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "lamina CPU kernels (C++/OpenMP)";

  // The address of a NumPy array's first element, as ndarray.ctypes.data
  // gives it, in ~0.07 us instead of ~1.5 us (ctypes.data builds the whole
  // __array_interface__ dict): every kernel call passes two or three.
  m.def(
      "data_ptr",
      [](py::handle a) -> uintptr_t {
        if (!py::isinstance<py::array>(a)) throw py::type_error("lamina._C.data_ptr: expected a numpy.ndarray");
        return reinterpret_cast<uintptr_t>(py::detail::array_proxy(a.ptr())->data);
      },
      py::arg("array"));

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
      "lstm_cell_forward",
      [](uintptr_t gates, uintptr_t c, uintptr_t h, uintptr_t gx, uintptr_t gh, uintptr_t c_prev, int64_t n, int64_t hh,
         const std::string& dtype) {
        if (dtype == "float32")
          return lstm_cell_forward(ptr<float>(gates), ptr<float>(c), ptr<float>(h), ptr<const float>(gx),
                                   ptr<const float>(gh), ptr<const float>(c_prev), n, hh);
        if (dtype == "float64")
          return lstm_cell_forward(ptr<double>(gates), ptr<double>(c), ptr<double>(h), ptr<const double>(gx),
                                   ptr<const double>(gh), ptr<const double>(c_prev), n, hh);
        bad_dtype("lstm_cell_forward", dtype);
      },
      py::arg("gates"), py::arg("c"), py::arg("h"), py::arg("gx"), py::arg("gh"), py::arg("c_prev"), py::arg("n"),
      py::arg("hidden"), py::arg("dtype"), py::call_guard<py::gil_scoped_release>());

  m.def(
      "lstm_cell_backward",
      [](uintptr_t da, uintptr_t dc_prev, uintptr_t dh, uintptr_t dc, uintptr_t gates, uintptr_t c, uintptr_t c_prev,
         int64_t n, int64_t hh, const std::string& dtype) {
        if (dtype == "float32")
          return lstm_cell_backward(ptr<float>(da), ptr<float>(dc_prev), ptr<const float>(dh), ptr<const float>(dc),
                                    ptr<const float>(gates), ptr<const float>(c), ptr<const float>(c_prev), n, hh);
        if (dtype == "float64")
          return lstm_cell_backward(ptr<double>(da), ptr<double>(dc_prev), ptr<const double>(dh), ptr<const double>(dc),
                                    ptr<const double>(gates), ptr<const double>(c), ptr<const double>(c_prev), n, hh);
        bad_dtype("lstm_cell_backward", dtype);
      },
      py::arg("da"), py::arg("dc_prev"), py::arg("dh"), py::arg("dc"), py::arg("gates"), py::arg("c"), py::arg("c_prev"),
      py::arg("n"), py::arg("hidden"), py::arg("dtype"), py::call_guard<py::gil_scoped_release>());

  m.def(
      "gru_cell_forward",
      [](uintptr_t gates, uintptr_t ghn, uintptr_t h, uintptr_t gx, uintptr_t gh, uintptr_t h_prev, int64_t n, int64_t hh,
         const std::string& dtype) {
        if (dtype == "float32")
          return gru_cell_forward(ptr<float>(gates), ptr<float>(ghn), ptr<float>(h), ptr<const float>(gx),
                                  ptr<const float>(gh), ptr<const float>(h_prev), n, hh);
        if (dtype == "float64")
          return gru_cell_forward(ptr<double>(gates), ptr<double>(ghn), ptr<double>(h), ptr<const double>(gx),
                                  ptr<const double>(gh), ptr<const double>(h_prev), n, hh);
        bad_dtype("gru_cell_forward", dtype);
      },
      py::arg("gates"), py::arg("ghn"), py::arg("h"), py::arg("gx"), py::arg("gh"), py::arg("h_prev"), py::arg("n"),
      py::arg("hidden"), py::arg("dtype"), py::call_guard<py::gil_scoped_release>());

  m.def(
      "gru_cell_backward",
      [](uintptr_t dgx, uintptr_t dgh, uintptr_t dh_direct, uintptr_t dh, uintptr_t gates, uintptr_t ghn, uintptr_t h_prev,
         int64_t n, int64_t hh, const std::string& dtype) {
        if (dtype == "float32")
          return gru_cell_backward(ptr<float>(dgx), ptr<float>(dgh), ptr<float>(dh_direct), ptr<const float>(dh),
                                   ptr<const float>(gates), ptr<const float>(ghn), ptr<const float>(h_prev), n, hh);
        if (dtype == "float64")
          return gru_cell_backward(ptr<double>(dgx), ptr<double>(dgh), ptr<double>(dh_direct), ptr<const double>(dh),
                                   ptr<const double>(gates), ptr<const double>(ghn), ptr<const double>(h_prev), n, hh);
        bad_dtype("gru_cell_backward", dtype);
      },
      py::arg("dgx"), py::arg("dgh"), py::arg("dh_direct"), py::arg("dh"), py::arg("gates"), py::arg("ghn"),
      py::arg("h_prev"), py::arg("n"), py::arg("hidden"), py::arg("dtype"), py::call_guard<py::gil_scoped_release>());

  m.def(
      "softmax_forward",
      [](uintptr_t y, uintptr_t x, int64_t rows, int64_t d, double scale, const std::string& dtype) {
        if (dtype == "float32") return softmax_forward(ptr<float>(y), ptr<const float>(x), rows, d, scale);
        if (dtype == "float64") return softmax_forward(ptr<double>(y), ptr<const double>(x), rows, d, scale);
        bad_dtype("softmax_forward", dtype);
      },
      py::arg("y"), py::arg("x"), py::arg("rows"), py::arg("d"), py::arg("scale"), py::arg("dtype"),
      py::call_guard<py::gil_scoped_release>());

  m.def(
      "softmax_backward",
      [](uintptr_t dx, uintptr_t dy, uintptr_t y, int64_t rows, int64_t d, double scale, const std::string& dtype) {
        if (dtype == "float32")
          return softmax_backward(ptr<float>(dx), ptr<const float>(dy), ptr<const float>(y), rows, d, scale);
        if (dtype == "float64")
          return softmax_backward(ptr<double>(dx), ptr<const double>(dy), ptr<const double>(y), rows, d, scale);
        bad_dtype("softmax_backward", dtype);
      },
      py::arg("dx"), py::arg("dy"), py::arg("y"), py::arg("rows"), py::arg("d"), py::arg("scale"), py::arg("dtype"),
      py::call_guard<py::gil_scoped_release>());

  // Layer normalisation; w, b (forward) and dw, db (backward) may be 0 (absent).
  m.def(
      "layernorm_forward",
      [](uintptr_t y, uintptr_t xhat, uintptr_t rstd, uintptr_t x, uintptr_t w, uintptr_t b, int64_t rows, int64_t d,
         double eps, const std::string& dtype) {
        if (dtype == "float32")
          return layernorm_forward(ptr<float>(y), ptr<float>(xhat), ptr<float>(rstd), ptr<const float>(x),
                                   ptr<const float>(w), ptr<const float>(b), rows, d, eps);
        if (dtype == "float64")
          return layernorm_forward(ptr<double>(y), ptr<double>(xhat), ptr<double>(rstd), ptr<const double>(x),
                                   ptr<const double>(w), ptr<const double>(b), rows, d, eps);
        bad_dtype("layernorm_forward", dtype);
      },
      py::arg("y"), py::arg("xhat"), py::arg("rstd"), py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("rows"),
      py::arg("d"), py::arg("eps"), py::arg("dtype"), py::call_guard<py::gil_scoped_release>());

  m.def(
      "layernorm_backward",
      [](uintptr_t dx, uintptr_t dw, uintptr_t db, uintptr_t dy, uintptr_t xhat, uintptr_t rstd, uintptr_t w,
         int64_t rows, int64_t d, const std::string& dtype) {
        if (dtype == "float32")
          return layernorm_backward(ptr<float>(dx), ptr<float>(dw), ptr<float>(db), ptr<const float>(dy),
                                    ptr<const float>(xhat), ptr<const float>(rstd), ptr<const float>(w), rows, d);
        if (dtype == "float64")
          return layernorm_backward(ptr<double>(dx), ptr<double>(dw), ptr<double>(db), ptr<const double>(dy),
                                    ptr<const double>(xhat), ptr<const double>(rstd), ptr<const double>(w), rows, d);
        bad_dtype("layernorm_backward", dtype);
      },
      py::arg("dx"), py::arg("dweight"), py::arg("dbias"), py::arg("dy"), py::arg("xhat"), py::arg("rstd"),
      py::arg("weight"), py::arg("rows"), py::arg("d"), py::arg("dtype"), py::call_guard<py::gil_scoped_release>());

  m.def(
      "ctc_loss",
      [](uintptr_t nll, uintptr_t grad, uintptr_t alpha, uintptr_t beta, uintptr_t log_probs, uintptr_t targets,
         uintptr_t input_lengths, uintptr_t target_lengths, uintptr_t scale, int64_t t_max, int64_t n, int64_t c,
         int64_t s_max, int64_t stride_t, int64_t stride_n, int blank, bool zero_infinity, const std::string& dtype) {
        const auto* tg = ptr<const int64_t>(targets);
        const auto* il = ptr<const int64_t>(input_lengths);
        const auto* tl = ptr<const int64_t>(target_lengths);
        if (dtype == "float32")
          return ctc_loss(ptr<float>(nll), ptr<float>(grad), ptr<float>(alpha), ptr<float>(beta),
                          ptr<const float>(log_probs), tg, il, tl, ptr<const float>(scale), t_max, n, c, s_max,
                          stride_t, stride_n, blank, zero_infinity);
        if (dtype == "float64")
          return ctc_loss(ptr<double>(nll), ptr<double>(grad), ptr<double>(alpha), ptr<double>(beta),
                          ptr<const double>(log_probs), tg, il, tl, ptr<const double>(scale), t_max, n, c, s_max,
                          stride_t, stride_n, blank, zero_infinity);
        bad_dtype("ctc_loss", dtype);
      },
      py::arg("nll"), py::arg("grad"), py::arg("alpha"), py::arg("beta"), py::arg("log_probs"), py::arg("targets"),
      py::arg("input_lengths"), py::arg("target_lengths"), py::arg("scale"), py::arg("t_max"), py::arg("n"),
      py::arg("c"), py::arg("s_max"), py::arg("stride_t"), py::arg("stride_n"), py::arg("blank"),
      py::arg("zero_infinity"), py::arg("dtype"), py::call_guard<py::gil_scoped_release>());

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

  m.def(
      "relu_forward",
      [](uintptr_t y, uintptr_t x, int64_t n, const std::string& dtype) {
        if (dtype == "float32") return relu_forward(ptr<float>(y), ptr<const float>(x), n);
        if (dtype == "float64") return relu_forward(ptr<double>(y), ptr<const double>(x), n);
        bad_dtype("relu_forward", dtype);
      },
      py::arg("y"), py::arg("x"), py::arg("n"), py::arg("dtype"), py::call_guard<py::gil_scoped_release>());

  m.def(
      "relu_backward",
      [](uintptr_t dx, uintptr_t dy, uintptr_t y, int64_t n, const std::string& dtype) {
        if (dtype == "float32") return relu_backward(ptr<float>(dx), ptr<const float>(dy), ptr<const float>(y), n);
        if (dtype == "float64") return relu_backward(ptr<double>(dx), ptr<const double>(dy), ptr<const double>(y), n);
        bad_dtype("relu_backward", dtype);
      },
      py::arg("dx"), py::arg("dy"), py::arg("y"), py::arg("n"), py::arg("dtype"), py::call_guard<py::gil_scoped_release>());

  m.def(
      "im2col",
      [](uintptr_t col, uintptr_t x, const GeometryTuple& g, const std::string& dtype) {
        if (dtype == "float32") return im2col(ptr<float>(col), ptr<const float>(x), geometry(g));
        if (dtype == "float64") return im2col(ptr<double>(col), ptr<const double>(x), geometry(g));
        bad_dtype("im2col", dtype);
      },
      py::arg("col"), py::arg("x"), py::arg("geometry"), py::arg("dtype"), py::call_guard<py::gil_scoped_release>());

  m.def(
      "col2im",
      [](uintptr_t dx, uintptr_t dcol, const GeometryTuple& g, const std::string& dtype) {
        if (dtype == "float32") return col2im(ptr<float>(dx), ptr<const float>(dcol), geometry(g));
        if (dtype == "float64") return col2im(ptr<double>(dx), ptr<const double>(dcol), geometry(g));
        bad_dtype("col2im", dtype);
      },
      py::arg("dx"), py::arg("dcol"), py::arg("geometry"), py::arg("dtype"), py::call_guard<py::gil_scoped_release>());

  m.def("cpu_has_avx2_fma", &cpu_has_avx2_fma, "Whether this CPU runs lamina's AVX2 + FMA kernels.");
  m.def("set_avx2", &set_avx2, py::arg("enabled"),
        "Turn the AVX2 + FMA builds of the elementwise kernels (GELU) on or off; returns the previous "
        "setting.  Off, they run on their baseline (SSE2) build: for tests and comparisons.");

  // Direct convolution.  Each call checks what would otherwise crash (an
  // AVX2 instruction on a CPU without it) or read out of bounds.
  m.def("conv_direct_supported", &conv_direct_supported);
  m.def("conv_direct_geometry_ok", [](const GeometryTuple& g) { return conv_direct_geometry_ok(geometry(g)); },
        py::arg("geometry"));

  m.def(
      "conv_direct_forward",
      [](uintptr_t y, uintptr_t x, uintptr_t w, uintptr_t bias, const GeometryTuple& gt, int64_t o, int64_t groups,
         const std::string& dtype, const std::string& variant) {
        const ConvGeometry g = direct_geometry("conv_direct_forward", gt);
        const int v = direct_variant("conv_direct_forward", variant);
        if (dtype == "float32")
          return conv_direct_forward(ptr<float>(y), ptr<const float>(x), ptr<const float>(w), ptr<const float>(bias), g,
                                     o, groups, v);
        if (dtype == "float64")
          return conv_direct_forward(ptr<double>(y), ptr<const double>(x), ptr<const double>(w),
                                     ptr<const double>(bias), g, o, groups, v);
        bad_dtype("conv_direct_forward", dtype);
      },
      py::arg("y"), py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("geometry"), py::arg("out_channels"),
      py::arg("groups"), py::arg("dtype"), py::arg("variant") = "auto", py::call_guard<py::gil_scoped_release>());

  m.def(
      "conv_direct_backward_data",
      [](uintptr_t dx, uintptr_t dy, uintptr_t w, const GeometryTuple& gt, int64_t o, int64_t groups,
         const std::string& dtype, const std::string& variant) {
        const ConvGeometry g = direct_geometry("conv_direct_backward_data", gt);
        const int v = direct_variant("conv_direct_backward_data", variant);
        if (dtype == "float32")
          return conv_direct_backward_data(ptr<float>(dx), ptr<const float>(dy), ptr<const float>(w), g, o, groups, v);
        if (dtype == "float64")
          return conv_direct_backward_data(ptr<double>(dx), ptr<const double>(dy), ptr<const double>(w), g, o, groups,
                                           v);
        bad_dtype("conv_direct_backward_data", dtype);
      },
      py::arg("dx"), py::arg("dy"), py::arg("weight"), py::arg("geometry"), py::arg("out_channels"), py::arg("groups"),
      py::arg("dtype"), py::arg("variant") = "auto", py::call_guard<py::gil_scoped_release>());

  m.def(
      "conv_direct_backward_weight",
      [](uintptr_t dw, uintptr_t db, uintptr_t dy, uintptr_t x, const GeometryTuple& gt, int64_t o, int64_t groups,
         const std::string& dtype, const std::string& variant) {
        const ConvGeometry g = direct_geometry("conv_direct_backward_weight", gt);
        const int v = direct_variant("conv_direct_backward_weight", variant);
        if (dtype == "float32")
          return conv_direct_backward_weight(ptr<float>(dw), ptr<float>(db), ptr<const float>(dy), ptr<const float>(x),
                                             g, o, groups, v);
        if (dtype == "float64")
          return conv_direct_backward_weight(ptr<double>(dw), ptr<double>(db), ptr<const double>(dy),
                                             ptr<const double>(x), g, o, groups, v);
        bad_dtype("conv_direct_backward_weight", dtype);
      },
      py::arg("dweight"), py::arg("dbias"), py::arg("dy"), py::arg("x"), py::arg("geometry"), py::arg("out_channels"),
      py::arg("groups"), py::arg("dtype"), py::arg("variant") = "auto", py::call_guard<py::gil_scoped_release>());

  m.def(
      "channels_to_batch_major",
      [](uintptr_t out, uintptr_t in, uintptr_t bias, int64_t n, int64_t c, int64_t p, const std::string& dtype) {
        if (dtype == "float32")
          return channels_to_batch_major(ptr<float>(out), ptr<const float>(in), ptr<const float>(bias), n, c, p);
        if (dtype == "float64")
          return channels_to_batch_major(ptr<double>(out), ptr<const double>(in), ptr<const double>(bias), n, c, p);
        bad_dtype("channels_to_batch_major", dtype);
      },
      py::arg("out"), py::arg("x"), py::arg("bias"), py::arg("n"), py::arg("c"), py::arg("p"), py::arg("dtype"),
      py::call_guard<py::gil_scoped_release>());

  m.def(
      "batch_to_channels_major",
      [](uintptr_t out, uintptr_t sums, uintptr_t in, int64_t n, int64_t c, int64_t p, const std::string& dtype) {
        if (dtype == "float32")
          return batch_to_channels_major(ptr<float>(out), ptr<float>(sums), ptr<const float>(in), n, c, p);
        if (dtype == "float64")
          return batch_to_channels_major(ptr<double>(out), ptr<double>(sums), ptr<const double>(in), n, c, p);
        bad_dtype("batch_to_channels_major", dtype);
      },
      py::arg("out"), py::arg("sums"), py::arg("x"), py::arg("n"), py::arg("c"), py::arg("p"), py::arg("dtype"),
      py::call_guard<py::gil_scoped_release>());

  m.def(
      "maxpool_forward",
      [](uintptr_t y, uintptr_t idx, uintptr_t x, const GeometryTuple& g, const std::string& dtype) {
        auto* i = ptr<int64_t>(idx);
        if (dtype == "float32") return maxpool_forward(ptr<float>(y), i, ptr<const float>(x), geometry(g));
        if (dtype == "float64") return maxpool_forward(ptr<double>(y), i, ptr<const double>(x), geometry(g));
        bad_dtype("maxpool_forward", dtype);
      },
      py::arg("y"), py::arg("idx"), py::arg("x"), py::arg("geometry"), py::arg("dtype"),
      py::call_guard<py::gil_scoped_release>());

  m.def(
      "maxpool_backward",
      [](uintptr_t dx, uintptr_t dy, uintptr_t idx, const GeometryTuple& g, const std::string& dtype) {
        const auto* i = ptr<const int64_t>(idx);
        if (dtype == "float32") return maxpool_backward(ptr<float>(dx), ptr<const float>(dy), i, geometry(g));
        if (dtype == "float64") return maxpool_backward(ptr<double>(dx), ptr<const double>(dy), i, geometry(g));
        bad_dtype("maxpool_backward", dtype);
      },
      py::arg("dx"), py::arg("dy"), py::arg("idx"), py::arg("geometry"), py::arg("dtype"),
      py::call_guard<py::gil_scoped_release>());

  m.def(
      "avgpool_forward",
      [](uintptr_t y, uintptr_t x, const GeometryTuple& g, bool count_include_pad, const std::string& dtype) {
        if (dtype == "float32")
          return avgpool_forward(ptr<float>(y), ptr<const float>(x), geometry(g), count_include_pad);
        if (dtype == "float64")
          return avgpool_forward(ptr<double>(y), ptr<const double>(x), geometry(g), count_include_pad);
        bad_dtype("avgpool_forward", dtype);
      },
      py::arg("y"), py::arg("x"), py::arg("geometry"), py::arg("count_include_pad"), py::arg("dtype"),
      py::call_guard<py::gil_scoped_release>());

  m.def(
      "avgpool_backward",
      [](uintptr_t dx, uintptr_t dy, const GeometryTuple& g, bool count_include_pad, const std::string& dtype) {
        if (dtype == "float32")
          return avgpool_backward(ptr<float>(dx), ptr<const float>(dy), geometry(g), count_include_pad);
        if (dtype == "float64")
          return avgpool_backward(ptr<double>(dx), ptr<const double>(dy), geometry(g), count_include_pad);
        bad_dtype("avgpool_backward", dtype);
      },
      py::arg("dx"), py::arg("dy"), py::arg("geometry"), py::arg("count_include_pad"), py::arg("dtype"),
      py::call_guard<py::gil_scoped_release>());

  m.def(
      "batchnorm_stats",
      [](uintptr_t mean, uintptr_t var, uintptr_t x, int64_t n, int64_t c, int64_t l, const std::string& dtype) {
        if (dtype == "float32") return batchnorm_stats(ptr<float>(mean), ptr<float>(var), ptr<const float>(x), n, c, l);
        if (dtype == "float64")
          return batchnorm_stats(ptr<double>(mean), ptr<double>(var), ptr<const double>(x), n, c, l);
        bad_dtype("batchnorm_stats", dtype);
      },
      py::arg("mean"), py::arg("var"), py::arg("x"), py::arg("n"), py::arg("c"), py::arg("l"), py::arg("dtype"),
      py::call_guard<py::gil_scoped_release>());

  m.def(
      "batchnorm_apply",
      [](uintptr_t y, uintptr_t xhat, uintptr_t x, uintptr_t mean, uintptr_t inv_std, uintptr_t gamma, uintptr_t beta,
         int64_t n, int64_t c, int64_t l, const std::string& dtype) {
        if (dtype == "float32")
          return batchnorm_apply(ptr<float>(y), ptr<float>(xhat), ptr<const float>(x), ptr<const float>(mean),
                                 ptr<const float>(inv_std), ptr<const float>(gamma), ptr<const float>(beta), n, c, l);
        if (dtype == "float64")
          return batchnorm_apply(ptr<double>(y), ptr<double>(xhat), ptr<const double>(x), ptr<const double>(mean),
                                 ptr<const double>(inv_std), ptr<const double>(gamma), ptr<const double>(beta), n, c,
                                 l);
        bad_dtype("batchnorm_apply", dtype);
      },
      py::arg("y"), py::arg("xhat"), py::arg("x"), py::arg("mean"), py::arg("inv_std"), py::arg("gamma"),
      py::arg("beta"), py::arg("n"), py::arg("c"), py::arg("l"), py::arg("dtype"),
      py::call_guard<py::gil_scoped_release>());

  m.def(
      "batchnorm_backward",
      [](uintptr_t dx, uintptr_t dgamma, uintptr_t dbeta, uintptr_t dy, uintptr_t xhat, uintptr_t gamma,
         uintptr_t inv_std, int64_t n, int64_t c, int64_t l, bool batch_stats, const std::string& dtype) {
        if (dtype == "float32")
          return batchnorm_backward(ptr<float>(dx), ptr<float>(dgamma), ptr<float>(dbeta), ptr<const float>(dy),
                                    ptr<const float>(xhat), ptr<const float>(gamma), ptr<const float>(inv_std), n, c,
                                    l, batch_stats);
        if (dtype == "float64")
          return batchnorm_backward(ptr<double>(dx), ptr<double>(dgamma), ptr<double>(dbeta), ptr<const double>(dy),
                                    ptr<const double>(xhat), ptr<const double>(gamma), ptr<const double>(inv_std), n,
                                    c, l, batch_stats);
        bad_dtype("batchnorm_backward", dtype);
      },
      py::arg("dx"), py::arg("dgamma"), py::arg("dbeta"), py::arg("dy"), py::arg("xhat"), py::arg("gamma"),
      py::arg("inv_std"), py::arg("n"), py::arg("c"), py::arg("l"), py::arg("batch_stats"), py::arg("dtype"),
      py::call_guard<py::gil_scoped_release>());

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
  m.attr("kernels") = py::make_tuple("relu_forward", "relu_backward", "gelu_forward", "gelu_backward", "softmax_forward",
                                      "softmax_backward", "layernorm_forward", "layernorm_backward", "lstm_cell_forward", "lstm_cell_backward",
                                      "gru_cell_forward", "gru_cell_backward", "softmax_xent", "ctc_loss", "im2col", "col2im",
                                      "channels_to_batch_major", "batch_to_channels_major",
                                      "batchnorm_stats", "batchnorm_apply", "batchnorm_backward",
                                      "maxpool_forward", "maxpool_backward", "avgpool_forward", "avgpool_backward",
                                      "conv_direct_forward", "conv_direct_backward_data", "conv_direct_backward_weight");
}
