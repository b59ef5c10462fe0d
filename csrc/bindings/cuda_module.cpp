// pybind11 bindings of lamina._C_cuda.  Compiled by the host compiler and
// linked with the nvcc-built kernel objects; no pybind11 inside .cu files.
// Arrays arrive as raw device addresses (cupy.ndarray.data.ptr), the stream
// as cupy's current stream handle; lamina/ops validates everything first.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "../cuda/launchers.h"

namespace py = pybind11;
namespace lc = lamina::cuda;

#ifndef LAMINA_CUDA_ARCHS
#define LAMINA_CUDA_ARCHS "unknown"
#endif

namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("lamina._C_cuda.") + what + ": " + cudaGetErrorName(err) + ": " +
                             cudaGetErrorString(err));
  }
}

cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

template <typename T>
T* ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

// Calls f(T{}) with the storage type named by dtype.
template <typename F>
void dispatch(const std::string& dtype, const char* fn, F&& f) {
  if (dtype == "float32") return f(float{});
  if (dtype == "float64") return f(double{});
  if (dtype == "float16") return f(__half{});
  if (dtype == "bfloat16") return f(__nv_bfloat16{});
  throw std::invalid_argument(std::string(fn) + ": expected dtype float32, float64, float16 or bfloat16, received " +
                              dtype);
}

// The GEMM epilogue's activation code (launchers.h) for its Python name.
int act_code(const std::string& act, const char* fn) {
  if (act == "none") return lc::kActNone;
  if (act == "relu") return lc::kActRelu;
  if (act == "gelu") return lc::kActGelu;
  if (act == "gelu_tanh") return lc::kActGeluTanh;
  throw std::invalid_argument(std::string(fn) + ": expected act 'none', 'relu', 'gelu' or 'gelu_tanh', received " +
                              act);
}

// Calls f(T{}) for the convolution kernels' storage types (no float64).
template <typename F>
void dispatch_conv(const std::string& dtype, const char* fn, F&& f) {
  if (dtype == "float32") return f(float{});
  if (dtype == "float16") return f(__half{});
  if (dtype == "bfloat16") return f(__nv_bfloat16{});
  throw std::invalid_argument(std::string(fn) + ": expected dtype float32, float16 or bfloat16, received " + dtype);
}

// A lamina.ops.Geometry (14 ints: n c h w kh kw sh sw pt pl dh dw oh ow),
// the output channels and the groups, as the kernels read them.
lc::ConvShape conv_shape(const py::tuple& g, int o, int groups) {
  if (g.size() != 14) throw std::invalid_argument("conv geometry: expected 14 integers, received " + std::to_string(g.size()));
  auto at = [&](int i) { return g[i].cast<int>(); };
  return lc::ConvShape{at(0), at(1), at(2), at(3), o, groups, at(4), at(5), at(6), at(7),
                       at(8), at(9), at(10), at(11), at(12), at(13)};
}

// A convolution launch plan from the bindings' rows= and blocks= (0: lamina's rule).
lc::ConvPlan conv_plan(const char* fn, int rows, int blocks) {
  if (rows != 0 && rows != 32 && rows != 64 && rows != 128)
    throw std::invalid_argument(std::string(fn) + ": expected rows 0 (the rule), 32, 64 or 128, received " +
                                std::to_string(rows));
  if (blocks < 0 || blocks > 2)
    throw std::invalid_argument(std::string(fn) + ": expected blocks 0 (the rule), 1 or 2, received " +
                                std::to_string(blocks));
  return lc::ConvPlan{rows, blocks};
}

// The convolution pass named by the bindings (conv2d_workspace_size, conv2d_on_wgmma), as launchers.h numbers them.
int conv_pass(const std::string& pass, const char* fn) {
  if (pass == "forward") return 0;
  if (pass == "backward_data") return 1;
  if (pass == "backward_weight") return 2;
  throw std::invalid_argument(std::string(fn) + ": expected pass forward, backward_data or backward_weight, "
                              "received " + pass);
}

// Bytes of workspace a convolution pass needs (0: none); dy, backward-weight's dy (0: any dy).
int64_t conv_workspace(int pass, const std::string& dtype, const lc::ConvShape& s, int splits, uintptr_t dy = 0) {
  int64_t bytes = 0;
  dispatch_conv(dtype, "conv2d_workspace_size", [&](auto t) {
    bytes = lc::conv2d_workspace_size<decltype(t)>(pass, s, splits, dy != 0 && dy % 16 == 0);
  });
  return bytes;
}

// A workspace missing or smaller than the launch will write: said here, before anything is launched, where
// the error can name both sizes (the kernels themselves would run past the end of the buffer).
void require_workspace(const char* fn, const char* sized_by, uintptr_t workspace, int64_t nbytes, int64_t needed) {
  if (needed <= 0) return;
  if (workspace == 0)
    throw std::invalid_argument(std::string(fn) + ": expected a workspace of " + std::to_string(needed) +
                                " bytes (" + sized_by + "), received none");
  if (nbytes < needed)
    throw std::invalid_argument(std::string(fn) + ": expected a workspace of " + std::to_string(needed) +
                                " bytes (" + sized_by + "), received workspace_bytes=" + std::to_string(nbytes));
}

// A process-wide switch of the kernels: name(enabled=None) sets it unless None and returns the previous setting.
void bind_switch(py::module_& m, const char* name, bool (*get)(), void (*set)(bool), const char* doc) {
  m.def(
      name,
      [get, set](py::object enabled) {
        const bool before = get();
        if (!enabled.is_none()) set(enabled.cast<bool>());
        return before;
      },
      py::arg("enabled") = py::none(), doc);
}

// The fused optimizer kernels' per-parameter table from parallel lists:
// ptrs[k][i] is pointer k of parameter i (0: none), scalars[j][i] its
// scalar j.  Every list must hold one entry per parameter.
using Addresses = std::vector<uintptr_t>;
using Scalars = std::vector<double>;
std::vector<lc::MultiTensor> multi_tensors(const char* fn, std::initializer_list<const Addresses*> ptrs,
                                           const std::vector<int64_t>& sizes,
                                           std::initializer_list<const Scalars*> scalars = {}) {
  const size_t n = sizes.size();
  auto mismatch = [&]() {
    std::string lengths;
    for (const Addresses* p : ptrs) lengths += std::to_string(p->size()) + ", ";
    for (const Scalars* p : scalars) lengths += std::to_string(p->size()) + ", ";
    return std::invalid_argument(std::string(fn) + ": expected one entry per parameter (" + std::to_string(n) +
                                 ") in every list, received lists of " + lengths.substr(0, lengths.size() - 2));
  };
  for (const Addresses* p : ptrs)
    if (p->size() != n) throw mismatch();
  for (const Scalars* p : scalars)
    if (p->size() != n) throw mismatch();
  std::vector<lc::MultiTensor> tensors(n);
  for (size_t i = 0; i < n; ++i) {
    lc::MultiTensor& t = tensors[i];
    t = {};
    int k = 0;
    for (const Addresses* p : ptrs) t.ptr[k++] = ptr<void>((*p)[i]);
    t.n = sizes[i];
    double* out[3] = {&t.s0, &t.s1, &t.s2};
    int j = 0;
    for (const Scalars* p : scalars) *out[j++] = (*p)[i];
  }
  return tensors;
}

// Calls f(T{}) for float32 or float64 (the optimizer, CTC and RNN-cell kernels' types), without the GIL.
template <typename F>
void dispatch_float(const std::string& dtype, const char* fn, F&& f) {
  if (dtype != "float32" && dtype != "float64")
    throw std::invalid_argument(std::string(fn) + ": expected dtype float32 or float64, received " + dtype);
  py::gil_scoped_release release;
  if (dtype == "float32") return f(float{});
  f(double{});
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: clear the sticky error, report none
    return 0;
  }
  return n;
}

}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "lamina CUDA kernels";

  m.def(
      "relu_forward",
      [](uintptr_t y, uintptr_t x, int64_t n, const std::string& dtype, uintptr_t stream) {
        dispatch(dtype, "relu_forward", [&](auto t) {
          using T = decltype(t);
          check(lc::relu_forward(ptr<T>(y), ptr<const T>(x), n, as_stream(stream)), "relu_forward");
        });
      },
      py::arg("y"), py::arg("x"), py::arg("n"), py::arg("dtype"), py::arg("stream"),
      py::call_guard<py::gil_scoped_release>());

  m.def(
      "relu_backward",
      [](uintptr_t dx, uintptr_t dy, uintptr_t y, int64_t n, const std::string& dtype, uintptr_t stream) {
        dispatch(dtype, "relu_backward", [&](auto t) {
          using T = decltype(t);
          check(lc::relu_backward(ptr<T>(dx), ptr<const T>(dy), ptr<const T>(y), n, as_stream(stream)),
                "relu_backward");
        });
      },
      py::arg("dx"), py::arg("dy"), py::arg("y"), py::arg("n"), py::arg("dtype"), py::arg("stream"),
      py::call_guard<py::gil_scoped_release>());

  m.def(
      "gelu_forward",
      [](uintptr_t y, uintptr_t x, int64_t n, bool tanh_approx, const std::string& dtype, uintptr_t stream) {
        dispatch(dtype, "gelu_forward", [&](auto t) {
          using T = decltype(t);
          check(lc::gelu_forward(ptr<T>(y), ptr<const T>(x), n, tanh_approx, as_stream(stream)), "gelu_forward");
        });
      },
      py::arg("y"), py::arg("x"), py::arg("n"), py::arg("tanh_approx"), py::arg("dtype"), py::arg("stream"),
      py::call_guard<py::gil_scoped_release>());

  m.def(
      "gelu_backward",
      [](uintptr_t dx, uintptr_t dy, uintptr_t x, int64_t n, bool tanh_approx, const std::string& dtype,
         uintptr_t stream) {
        dispatch(dtype, "gelu_backward", [&](auto t) {
          using T = decltype(t);
          check(lc::gelu_backward(ptr<T>(dx), ptr<const T>(dy), ptr<const T>(x), n, tanh_approx, as_stream(stream)),
                "gelu_backward");
        });
      },
      py::arg("dx"), py::arg("dy"), py::arg("x"), py::arg("n"), py::arg("tanh_approx"), py::arg("dtype"),
      py::arg("stream"), py::call_guard<py::gil_scoped_release>());

  m.def(
      "softmax_xent",
      [](uintptr_t loss, uintptr_t dlogits, uintptr_t logits, uintptr_t labels, int64_t n, int64_t c, double smoothing,
         double grad_scale, const std::string& dtype, uintptr_t stream) {
        dispatch(dtype, "softmax_xent", [&](auto t) {
          using T = decltype(t);
          check(lc::softmax_xent(ptr<T>(loss), ptr<T>(dlogits), ptr<const T>(logits), ptr<const int64_t>(labels), n, c,
                                 smoothing, grad_scale, as_stream(stream)),
                "softmax_xent");
        });
      },
      py::arg("loss"), py::arg("dlogits"), py::arg("logits"), py::arg("labels"), py::arg("n"), py::arg("c"),
      py::arg("smoothing"), py::arg("grad_scale"), py::arg("dtype"), py::arg("stream"),
      py::call_guard<py::gil_scoped_release>());

  m.def(
      "sgd_update",
      [](const Addresses& params, const Addresses& grads, const Addresses& bufs, const std::vector<int64_t>& sizes,
         const Scalars& first_steps, double lr, double momentum, double dampening, double weight_decay, bool nesterov,
         const std::string& dtype, uintptr_t stream) {
        const auto tensors = multi_tensors("sgd_update", {&params, &grads, &bufs}, sizes, {&first_steps});
        dispatch_float(dtype, "sgd_update", [&](auto t) {
          using T = decltype(t);
          check(lc::sgd_update<T>(tensors, lr, momentum, dampening, weight_decay, nesterov, as_stream(stream)),
                "sgd_update");
        });
      },
      py::arg("params"), py::arg("grads"), py::arg("bufs"), py::arg("sizes"), py::arg("first_steps"), py::arg("lr"),
      py::arg("momentum"), py::arg("dampening"), py::arg("weight_decay"), py::arg("nesterov"), py::arg("dtype"),
      py::arg("stream"),
      "SGD on many parameters of one dtype, in one launch per 48 (bufs[i] = 0 without momentum; first_steps[i] 1 "
      "when its buffer is fresh, else 0).");

  m.def(
      "ctc_loss",
      [](uintptr_t nll, uintptr_t grad, uintptr_t alpha, uintptr_t beta, uintptr_t log_probs, uintptr_t targets,
         uintptr_t input_lengths, uintptr_t target_lengths, uintptr_t scale, int64_t t_max, int64_t n, int64_t c,
         int64_t s_max, int64_t stride_t, int64_t stride_n, int blank, bool zero_infinity, const std::string& dtype,
         uintptr_t stream) {
        dispatch_float(dtype, "ctc_loss", [&](auto t) {
          using T = decltype(t);
          check(lc::ctc_loss<T>(ptr<T>(nll), ptr<T>(grad), ptr<T>(alpha), ptr<T>(beta), ptr<const T>(log_probs),
                                ptr<const int64_t>(targets), ptr<const int64_t>(input_lengths),
                                ptr<const int64_t>(target_lengths), ptr<const T>(scale), t_max, n, c, s_max, stride_t,
                                stride_n, blank, zero_infinity, as_stream(stream)),
                "ctc_loss");
        });
      },
      py::arg("nll"), py::arg("grad"), py::arg("alpha"), py::arg("beta"), py::arg("log_probs"), py::arg("targets"),
      py::arg("input_lengths"), py::arg("target_lengths"), py::arg("scale"), py::arg("t_max"), py::arg("n"),
      py::arg("c"), py::arg("s_max"), py::arg("stride_t"), py::arg("stride_n"), py::arg("blank"),
      py::arg("zero_infinity"), py::arg("dtype"), py::arg("stream"),
      "CTC loss per sample and (grad != 0) its scaled gradient: the forward-backward recursions, one block per sample.");

  m.def(
      "rmsprop_update",
      [](const Addresses& params, const Addresses& grads, const Addresses& square_avgs, const Addresses& grad_avgs,
         const Addresses& bufs, const std::vector<int64_t>& sizes, double lr, double alpha, double eps,
         double weight_decay, double momentum, bool centered, const std::string& dtype, uintptr_t stream) {
        const auto tensors = multi_tensors("rmsprop_update", {&params, &grads, &square_avgs, &grad_avgs, &bufs}, sizes);
        for (size_t i = 0; i < tensors.size(); ++i)
          if ((centered && grad_avgs[i] == 0) || (momentum != 0 && bufs[i] == 0))
            throw std::invalid_argument("rmsprop_update: centered needs grad_avgs and momentum needs bufs for every parameter");
        dispatch_float(dtype, "rmsprop_update", [&](auto t) {
          using T = decltype(t);
          check(lc::rmsprop_update<T>(tensors, lr, alpha, eps, weight_decay, momentum, centered, as_stream(stream)),
                "rmsprop_update");
        });
      },
      py::arg("params"), py::arg("grads"), py::arg("square_avgs"), py::arg("grad_avgs"), py::arg("bufs"), py::arg("sizes"),
      py::arg("lr"), py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"), py::arg("momentum"), py::arg("centered"),
      py::arg("dtype"), py::arg("stream"),
      "RMSprop on many parameters of one dtype, in one launch per 48 (grad_avgs[i] = 0 unless centered, bufs[i] = 0 "
      "without momentum).");

  m.def(
      "adagrad_update",
      [](const Addresses& params, const Addresses& grads, const Addresses& sums, const std::vector<int64_t>& sizes,
         const Scalars& clrs, double eps, double weight_decay, const std::string& dtype, uintptr_t stream) {
        const auto tensors = multi_tensors("adagrad_update", {&params, &grads, &sums}, sizes, {&clrs});
        dispatch_float(dtype, "adagrad_update", [&](auto t) {
          using T = decltype(t);
          check(lc::adagrad_update<T>(tensors, eps, weight_decay, as_stream(stream)), "adagrad_update");
        });
      },
      py::arg("params"), py::arg("grads"), py::arg("sums"), py::arg("sizes"), py::arg("clrs"), py::arg("eps"),
      py::arg("weight_decay"), py::arg("dtype"), py::arg("stream"),
      "Adagrad on many parameters of one dtype, in one launch per 48; clrs[i] = lr / (1 + (t_i - 1) lr_decay).");

  m.def(
      "lerp_update",
      [](const Addresses& averages, const Addresses& currents, const std::vector<int64_t>& sizes, double weight,
         const std::string& dtype, uintptr_t stream) {
        const auto tensors = multi_tensors("lerp_update", {&averages, &currents}, sizes);
        dispatch_float(dtype, "lerp_update", [&](auto t) {
          using T = decltype(t);
          check(lc::lerp_update<T>(tensors, weight, as_stream(stream)), "lerp_update");
        });
      },
      py::arg("averages"), py::arg("currents"), py::arg("sizes"), py::arg("weight"), py::arg("dtype"), py::arg("stream"),
      "a <- a + weight (x - a) for many arrays of one dtype (a weight average's update), one launch per 48.");

  m.def(
      "adam_update",
      [](const Addresses& params, const Addresses& grads, const Addresses& exp_avgs, const Addresses& exp_avg_sqs,
         const Addresses& max_exp_avg_sqs, const std::vector<int64_t>& sizes, const Scalars& step_sizes,
         const Scalars& bc2_sqrts, const Addresses& steps, double lr, double beta1, double beta2, double eps,
         double weight_decay, bool decoupled, bool amsgrad, bool capturable, const std::string& dtype,
         uintptr_t stream) {
        // The kernel reads max_exp_avg_sq only with amsgrad and the step count only when capturable, after it.
        auto tensors = amsgrad ? multi_tensors("adam_update", {&params, &grads, &exp_avgs, &exp_avg_sqs,
                                                               &max_exp_avg_sqs, &steps}, sizes, {&step_sizes, &bc2_sqrts})
                               : multi_tensors("adam_update", {&params, &grads, &exp_avgs, &exp_avg_sqs, &steps}, sizes,
                                               {&step_sizes, &bc2_sqrts});
        for (size_t i = 0; i < tensors.size(); ++i) {
          if (amsgrad && max_exp_avg_sqs[i] == 0)
            throw std::invalid_argument("adam_update: amsgrad needs max_exp_avg_sqs for every parameter");
          if (capturable && steps[i] == 0)
            throw std::invalid_argument("adam_update: capturable needs a device step count for every parameter");
        }
        dispatch_float(dtype, "adam_update", [&](auto t) {
          using T = decltype(t);
          check(lc::adam_update<T>(tensors, lr, beta1, beta2, eps, weight_decay, decoupled, amsgrad, capturable,
                                   as_stream(stream)),
                "adam_update");
        });
      },
      py::arg("params"), py::arg("grads"), py::arg("exp_avgs"), py::arg("exp_avg_sqs"), py::arg("max_exp_avg_sqs"),
      py::arg("sizes"), py::arg("step_sizes"), py::arg("bc2_sqrts"), py::arg("steps"), py::arg("lr"), py::arg("beta1"),
      py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"), py::arg("decoupled"), py::arg("amsgrad"),
      py::arg("capturable"), py::arg("dtype"), py::arg("stream"),
      "Adam/AdamW on many parameters of one dtype (each at its own step), in one launch per 48 (40 with amsgrad and "
      "capturable). amsgrad: max_exp_avg_sqs[i] holds parameter i's running maximum of exp_avg_sq. capturable: "
      "steps[i] is parameter i's step count on the device (dtype as the parameter), incremented by the launch, "
      "and the bias corrections are formed from it on the device; else they come from step_sizes and bc2_sqrts.");

  m.def(
      "adam_variant_update",
      [](const std::string& kind, const Addresses& params, const Addresses& grads, const Addresses& exp_avgs,
         const Addresses& exp_avg_sqs, const std::vector<int64_t>& sizes, const Scalars& s0, const Scalars& s1,
         const Scalars& s2, double lr, double beta1, double beta2, double eps, double weight_decay, bool decoupled,
         const std::string& dtype, uintptr_t stream) {
        if (kind != "nadam" && kind != "radam")
          throw std::invalid_argument("adam_variant_update: expected kind 'nadam' or 'radam', received " + kind);
        const auto tensors =
            multi_tensors("adam_variant_update", {&params, &grads, &exp_avgs, &exp_avg_sqs}, sizes, {&s0, &s1, &s2});
        dispatch_float(dtype, "adam_variant_update", [&](auto t) {
          using T = decltype(t);
          check(lc::adam_variant_update<T>(tensors, kind == "radam", lr, beta1, beta2, eps, weight_decay, decoupled,
                                           as_stream(stream)),
                "adam_variant_update");
        });
      },
      py::arg("kind"), py::arg("params"), py::arg("grads"), py::arg("exp_avgs"), py::arg("exp_avg_sqs"),
      py::arg("sizes"), py::arg("s0"), py::arg("s1"), py::arg("s2"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"),
      py::arg("eps"), py::arg("weight_decay"), py::arg("decoupled"), py::arg("dtype"), py::arg("stream"),
      "NAdam ('nadam') or RAdam ('radam') on many parameters of one dtype (each at its own step), in one launch per "
      "48; s0, s1, s2 are each parameter's step factors (csrc/cuda/launchers.h).");

  // g: lamina.ops.Geometry (n, c, h, w, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow)
  auto pool_shape = [](const std::vector<int64_t>& g, const char* fn) {
    if (g.size() != 14) throw std::invalid_argument(std::string(fn) + ": expected a 14-field geometry");
    for (size_t i = 2; i < 14; ++i)
      if (g[i] < 0 || g[i] > INT32_MAX) throw std::invalid_argument(std::string(fn) + ": geometry out of range");
    return lc::PoolShape{g[0] * g[1], int(g[2]), int(g[3]), int(g[12]), int(g[13]), int(g[4]), int(g[5]), int(g[6]),
                         int(g[7]),   int(g[8]), int(g[9]), int(g[10]), int(g[11])};
  };
  m.def(
      "maxpool2d_forward",
      [pool_shape](uintptr_t y, uintptr_t idx, uintptr_t x, const std::vector<int64_t>& g, const std::string& dtype,
                   uintptr_t stream) {
        const lc::PoolShape shape = pool_shape(g, "maxpool2d_forward");
        dispatch(dtype, "maxpool2d_forward", [&](auto t) {
          using T = decltype(t);
          py::gil_scoped_release release;
          check(lc::maxpool2d_forward<T>(ptr<T>(y), ptr<int64_t>(idx), ptr<const T>(x), shape, as_stream(stream)),
                "maxpool2d_forward");
        });
      },
      py::arg("y"), py::arg("idx"), py::arg("x"), py::arg("g"), py::arg("dtype"), py::arg("stream"));
  m.def(
      "maxpool2d_backward",
      [pool_shape](uintptr_t dx, uintptr_t dy, uintptr_t idx, const std::vector<int64_t>& g, const std::string& dtype,
                   uintptr_t stream) {
        const lc::PoolShape shape = pool_shape(g, "maxpool2d_backward");
        dispatch(dtype, "maxpool2d_backward", [&](auto t) {
          using T = decltype(t);
          py::gil_scoped_release release;
          check(lc::maxpool2d_backward<T>(ptr<T>(dx), ptr<const T>(dy), ptr<const int64_t>(idx), shape,
                                          as_stream(stream)),
                "maxpool2d_backward");
        });
      },
      py::arg("dx"), py::arg("dy"), py::arg("idx"), py::arg("g"), py::arg("dtype"), py::arg("stream"));

  m.def(
      "softmax_forward",
      [](uintptr_t y, uintptr_t x, int64_t rows, int64_t d, double scale, const std::string& dtype, uintptr_t stream) {
        dispatch(dtype, "softmax_forward", [&](auto t) {
          using T = decltype(t);
          py::gil_scoped_release release;
          check(lc::softmax_forward<T>(ptr<T>(y), ptr<const T>(x), rows, d, scale, as_stream(stream)), "softmax_forward");
        });
      },
      py::arg("y"), py::arg("x"), py::arg("rows"), py::arg("d"), py::arg("scale"), py::arg("dtype"), py::arg("stream"));
  m.def(
      "softmax_backward",
      [](uintptr_t dx, uintptr_t dy, uintptr_t y, int64_t rows, int64_t d, double scale, const std::string& dtype,
         uintptr_t stream) {
        dispatch(dtype, "softmax_backward", [&](auto t) {
          using T = decltype(t);
          py::gil_scoped_release release;
          check(lc::softmax_backward<T>(ptr<T>(dx), ptr<const T>(dy), ptr<const T>(y), rows, d, scale, as_stream(stream)),
                "softmax_backward");
        });
      },
      py::arg("dx"), py::arg("dy"), py::arg("y"), py::arg("rows"), py::arg("d"), py::arg("scale"), py::arg("dtype"),
      py::arg("stream"));
  // The recurrent cells: float32 and float64 only (16-bit layers compute their cells in float32).
  m.def(
      "lstm_cell_forward",
      [](uintptr_t gates, uintptr_t c, uintptr_t h, uintptr_t gx, uintptr_t gh, uintptr_t c_prev, int64_t n,
                        int64_t hh, const std::string& dtype, uintptr_t stream) {
        dispatch_float(dtype, "lstm_cell_forward", [&](auto t) {
          using T = decltype(t);
          check(lc::lstm_cell_forward<T>(ptr<T>(gates), ptr<T>(c), ptr<T>(h), ptr<const T>(gx), ptr<const T>(gh),
                                         ptr<const T>(c_prev), n, hh, as_stream(stream)),
                "lstm_cell_forward");
        });
      },
      py::arg("gates"), py::arg("c"), py::arg("h"), py::arg("gx"), py::arg("gh"), py::arg("c_prev"), py::arg("n"),
      py::arg("hidden"), py::arg("dtype"), py::arg("stream"));
  m.def(
      "lstm_cell_backward",
      [](uintptr_t da, uintptr_t dc_prev, uintptr_t dh, uintptr_t dc, uintptr_t gates, uintptr_t c,
                        uintptr_t c_prev, int64_t n, int64_t hh, const std::string& dtype, uintptr_t stream) {
        dispatch_float(dtype, "lstm_cell_backward", [&](auto t) {
          using T = decltype(t);
          check(lc::lstm_cell_backward<T>(ptr<T>(da), ptr<T>(dc_prev), ptr<const T>(dh), ptr<const T>(dc),
                                          ptr<const T>(gates), ptr<const T>(c), ptr<const T>(c_prev), n, hh,
                                          as_stream(stream)),
                "lstm_cell_backward");
        });
      },
      py::arg("da"), py::arg("dc_prev"), py::arg("dh"), py::arg("dc"), py::arg("gates"), py::arg("c"), py::arg("c_prev"),
      py::arg("n"), py::arg("hidden"), py::arg("dtype"), py::arg("stream"));
  m.def(
      "gru_cell_forward",
      [](uintptr_t gates, uintptr_t ghn, uintptr_t h, uintptr_t gx, uintptr_t gh, uintptr_t h_prev,
                        int64_t n, int64_t hh, const std::string& dtype, uintptr_t stream) {
        dispatch_float(dtype, "gru_cell_forward", [&](auto t) {
          using T = decltype(t);
          check(lc::gru_cell_forward<T>(ptr<T>(gates), ptr<T>(ghn), ptr<T>(h), ptr<const T>(gx), ptr<const T>(gh),
                                        ptr<const T>(h_prev), n, hh, as_stream(stream)),
                "gru_cell_forward");
        });
      },
      py::arg("gates"), py::arg("ghn"), py::arg("h"), py::arg("gx"), py::arg("gh"), py::arg("h_prev"), py::arg("n"),
      py::arg("hidden"), py::arg("dtype"), py::arg("stream"));
  m.def(
      "gru_cell_backward",
      [](uintptr_t dgx, uintptr_t dgh, uintptr_t dh_direct, uintptr_t dh, uintptr_t gates, uintptr_t ghn,
                        uintptr_t h_prev, int64_t n, int64_t hh, const std::string& dtype, uintptr_t stream) {
        dispatch_float(dtype, "gru_cell_backward", [&](auto t) {
          using T = decltype(t);
          check(lc::gru_cell_backward<T>(ptr<T>(dgx), ptr<T>(dgh), ptr<T>(dh_direct), ptr<const T>(dh),
                                         ptr<const T>(gates), ptr<const T>(ghn), ptr<const T>(h_prev), n, hh,
                                         as_stream(stream)),
                "gru_cell_backward");
        });
      },
      py::arg("dgx"), py::arg("dgh"), py::arg("dh_direct"), py::arg("dh"), py::arg("gates"), py::arg("ghn"),
      py::arg("h_prev"), py::arg("n"), py::arg("hidden"), py::arg("dtype"), py::arg("stream"));

  m.def("layernorm_row_chunks", &lc::layernorm_row_chunks, py::arg("rows"), py::arg("d"),
        "Row chunks of the layer-norm parameter gradients; their workspace holds 2 * d * chunks doubles.");
  m.def(
      "layernorm_forward",
      [](uintptr_t y, uintptr_t xhat, uintptr_t rstd, uintptr_t x, uintptr_t w, uintptr_t b, int64_t rows, int64_t d,
         double eps, const std::string& dtype, uintptr_t stream) {
        if (dtype != "float32" && dtype != "float64")
          throw std::invalid_argument("layernorm_forward: expected dtype float32 or float64, received " + dtype);
        py::gil_scoped_release release;
        auto run = [&](auto t) {
          using T = decltype(t);
          check(lc::layernorm_forward<T>(ptr<T>(y), ptr<T>(xhat), ptr<T>(rstd), ptr<const T>(x), ptr<const T>(w),
                                         ptr<const T>(b), rows, d, eps, as_stream(stream)),
                "layernorm_forward");
        };
        if (dtype == "float32") return run(float{});
        run(double{});
      },
      py::arg("y"), py::arg("xhat"), py::arg("rstd"), py::arg("x"), py::arg("w"), py::arg("b"), py::arg("rows"),
      py::arg("d"), py::arg("eps"), py::arg("dtype"), py::arg("stream"));
  m.def(
      "layernorm_backward",
      [](uintptr_t dx, uintptr_t dw, uintptr_t db, uintptr_t workspace, uintptr_t dy, uintptr_t xhat, uintptr_t rstd,
         uintptr_t w, int64_t rows, int64_t d, const std::string& dtype, uintptr_t stream, int64_t workspace_bytes) {
        if (dtype != "float32" && dtype != "float64")
          throw std::invalid_argument("layernorm_backward: expected dtype float32 or float64, received " + dtype);
        if (dw != 0 && rows > 0 && d > 0)  // the parameter gradients' row chunks
          require_workspace("layernorm_backward", "8 * 2 * d * layernorm_row_chunks(rows, d)", workspace,
                            workspace_bytes, int64_t{16} * d * lc::layernorm_row_chunks(rows, d));
        py::gil_scoped_release release;
        auto run = [&](auto t) {
          using T = decltype(t);
          check(lc::layernorm_backward<T>(ptr<T>(dx), ptr<T>(dw), ptr<T>(db), ptr<double>(workspace), ptr<const T>(dy),
                                          ptr<const T>(xhat), ptr<const T>(rstd), ptr<const T>(w), rows, d,
                                          as_stream(stream)),
                "layernorm_backward");
        };
        if (dtype == "float32") return run(float{});
        run(double{});
      },
      py::arg("dx"), py::arg("dw"), py::arg("db"), py::arg("workspace"), py::arg("dy"), py::arg("xhat"), py::arg("rstd"),
      py::arg("w"), py::arg("rows"), py::arg("d"), py::arg("dtype"), py::arg("stream"), py::arg("workspace_bytes") = 0,
      "dx of a layer norm, and with dw (0: not wanted) dw and db; workspace: 2 * d * layernorm_row_chunks(rows, d) "
      "doubles, workspace_bytes its size in bytes.");

  m.def(
      "dropout_forward",
      [](uintptr_t y, uintptr_t mask, uintptr_t x, int64_t n, double p, unsigned long long key, int64_t offset,
         const std::string& dtype, uintptr_t stream) {
        dispatch(dtype, "dropout_forward", [&](auto t) {
          using T = decltype(t);
          py::gil_scoped_release release;
          check(lc::dropout_forward<T>(ptr<T>(y), ptr<T>(mask), ptr<const T>(x), n, p, key, offset, as_stream(stream)),
                "dropout_forward");
        });
      },
      py::arg("y"), py::arg("mask"), py::arg("x"), py::arg("n"), py::arg("p"), py::arg("key"), py::arg("offset"),
      py::arg("dtype"), py::arg("stream"));

  m.def("batchnorm_slices", &lc::batchnorm_slices, py::arg("n"), py::arg("c"), py::arg("l"),
        "Slices per channel the batch-norm kernels use; their workspaces hold 3 * c * slices doubles (forward) "
        "and 2 * c * slices (backward).");

  m.def(
      "batchnorm_forward",
      [](uintptr_t y, uintptr_t xhat, uintptr_t mean, uintptr_t var, uintptr_t inv_std, uintptr_t running_mean,
         uintptr_t running_var, uintptr_t workspace, uintptr_t x, uintptr_t gamma, uintptr_t beta, int64_t n, int64_t c,
         int64_t l, double eps, bool batch_stats, double f_running, const std::string& dtype, uintptr_t stream,
         int64_t workspace_bytes) {
        if (dtype != "float32" && dtype != "float64")
          throw std::invalid_argument("batchnorm_forward: expected dtype float32 or float64, received " + dtype);
        if (batch_stats && n * l > 0 && c > 0)  // the statistics' slices
          require_workspace("batchnorm_forward", "8 * 3 * c * batchnorm_slices(n, c, l)", workspace, workspace_bytes,
                            int64_t{24} * c * lc::batchnorm_slices(n, c, l));
        py::gil_scoped_release release;
        auto run = [&](auto t) {
          using T = decltype(t);
          check(lc::batchnorm_forward<T>(ptr<T>(y), ptr<T>(xhat), ptr<T>(mean), ptr<T>(var), ptr<T>(inv_std),
                                         ptr<T>(running_mean), ptr<T>(running_var), ptr<double>(workspace),
                                         ptr<const T>(x), ptr<const T>(gamma), ptr<const T>(beta), n, c, l, eps,
                                         batch_stats, f_running, as_stream(stream)),
                "batchnorm_forward");
        };
        if (dtype == "float32") return run(float{});
        run(double{});
      },
      py::arg("y"), py::arg("xhat"), py::arg("mean"), py::arg("var"), py::arg("inv_std"), py::arg("running_mean"),
      py::arg("running_var"), py::arg("workspace"), py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("n"),
      py::arg("c"), py::arg("l"), py::arg("eps"), py::arg("batch_stats"), py::arg("f_running"), py::arg("dtype"),
      py::arg("stream"), py::arg("workspace_bytes") = 0,
      "Batch normalisation of x (N, C, L); with batch_stats a workspace of 3 * c * batchnorm_slices(n, c, l) doubles "
      "(workspace_bytes: its size in bytes), else the running statistics.");

  m.def(
      "batchnorm_backward",
      [](uintptr_t dx, uintptr_t dgamma, uintptr_t dbeta, uintptr_t workspace, uintptr_t dy, uintptr_t xhat,
         uintptr_t gamma, uintptr_t inv_std, int64_t n, int64_t c, int64_t l, bool batch_stats, const std::string& dtype,
         uintptr_t stream, int64_t workspace_bytes) {
        if (dtype != "float32" && dtype != "float64")
          throw std::invalid_argument("batchnorm_backward: expected dtype float32 or float64, received " + dtype);
        if (n * l > 0 && c > 0)  // the per-channel sums' slices
          require_workspace("batchnorm_backward", "8 * 2 * c * batchnorm_slices(n, c, l)", workspace, workspace_bytes,
                            int64_t{16} * c * lc::batchnorm_slices(n, c, l));
        py::gil_scoped_release release;
        auto run = [&](auto t) {
          using T = decltype(t);
          check(lc::batchnorm_backward<T>(ptr<T>(dx), ptr<T>(dgamma), ptr<T>(dbeta), ptr<double>(workspace),
                                          ptr<const T>(dy), ptr<const T>(xhat), ptr<const T>(gamma),
                                          ptr<const T>(inv_std), n, c, l, batch_stats, as_stream(stream)),
                "batchnorm_backward");
        };
        if (dtype == "float32") return run(float{});
        run(double{});
      },
      py::arg("dx"), py::arg("dgamma"), py::arg("dbeta"), py::arg("workspace"), py::arg("dy"), py::arg("xhat"),
      py::arg("gamma"), py::arg("inv_std"), py::arg("n"), py::arg("c"), py::arg("l"), py::arg("batch_stats"),
      py::arg("dtype"), py::arg("stream"), py::arg("workspace_bytes") = 0,
      "dx, dgamma and dbeta of a batch normalisation; workspace: 2 * c * batchnorm_slices(n, c, l) doubles "
      "(workspace_bytes: its size in bytes).");

  m.def(
      "unscale_grads",
      [](const Addresses& grads, const std::vector<int64_t>& sizes, double inv_scale, uintptr_t found_inf,
         const std::string& dtype, uintptr_t stream) {
        const auto tensors = multi_tensors("unscale_grads", {&grads}, sizes);
        dispatch_float(dtype, "unscale_grads", [&](auto t) {
          using T = decltype(t);
          check(lc::unscale_grads<T>(tensors, inv_scale, ptr<int>(found_inf), as_stream(stream)), "unscale_grads");
        });
      },
      py::arg("grads"), py::arg("sizes"), py::arg("inv_scale"), py::arg("found_inf"), py::arg("dtype"), py::arg("stream"),
      "Gradients times inv_scale in place; the int32 at found_inf (zeroed by the caller) becomes 1 on any inf/NaN.");

  m.def(
      "gemm",
      [](uintptr_t c, uintptr_t aux, uintptr_t a, uintptr_t b, uintptr_t bias, int64_t m, int64_t n, int64_t k,
         int64_t lda, int64_t ldb, int64_t ldc, bool trans_a, bool trans_b, const std::string& act,
         const std::string& dtype, const std::string& out_dtype, uintptr_t stream, int splits, uintptr_t workspace,
         int64_t workspace_bytes) {
        const int code = act_code(act, "gemm");
        if (splits != 1) {  // split-K: the fp32 SIMT GEMM only
          if (dtype != "float32" || out_dtype != "float32")
            throw std::invalid_argument("gemm: splits > 1 needs dtype and out_dtype float32, received " + dtype +
                                        " and " + out_dtype);
          if (splits < 1) throw std::invalid_argument("gemm: expected splits >= 1, received " + std::to_string(splits));
          require_workspace("gemm", "4 * splits * m * n", workspace, workspace_bytes,
                            int64_t{4} * splits * std::max<int64_t>(m, 0) * std::max<int64_t>(n, 0));
          check(lc::sgemm_split_k(ptr<float>(c), ptr<float>(aux), ptr<float>(workspace), splits, ptr<const float>(a),
                                  ptr<const float>(b), ptr<const float>(bias), m, n, k, lda, ldb, ldc, trans_a, trans_b,
                                  code, as_stream(stream)),
                "gemm");
          return;
        }
        auto run = [&](auto t, auto o) {
          using T = decltype(t);
          using O = decltype(o);
          check(lc::gemm<T, O>(ptr<O>(c), ptr<O>(aux), ptr<const T>(a), ptr<const T>(b), ptr<const T>(bias), m, n, k,
                               lda, ldb, ldc, trans_a, trans_b, code, as_stream(stream)),
                "gemm");
        };
        if (dtype == "float32" && out_dtype == "float32") return run(float{}, float{});
        if (dtype == "float16" && out_dtype == "float16") return run(__half{}, __half{});
        if (dtype == "float16" && out_dtype == "float32") return run(__half{}, float{});
        if (dtype == "bfloat16" && out_dtype == "bfloat16") return run(__nv_bfloat16{}, __nv_bfloat16{});
        if (dtype == "bfloat16" && out_dtype == "float32") return run(__nv_bfloat16{}, float{});
        throw std::invalid_argument("gemm: expected dtype float32, float16 or bfloat16 with out_dtype the same or "
                                    "float32, received dtype " + dtype + " and out_dtype " + out_dtype);
      },
      py::arg("c"), py::arg("aux"), py::arg("a"), py::arg("b"), py::arg("bias"), py::arg("m"), py::arg("n"),
      py::arg("k"), py::arg("lda"), py::arg("ldb"), py::arg("ldc"), py::arg("trans_a"), py::arg("trans_b"),
      py::arg("act"), py::arg("dtype"), py::arg("out_dtype"), py::arg("stream"), py::arg("splits") = 1,
      py::arg("workspace") = 0, py::arg("workspace_bytes") = 0, py::call_guard<py::gil_scoped_release>(),
      "c = act(op(a) op(b) + bias) (aux: the pre-activation, 0: not kept).  splits > 1 (fp32 only) cuts k into that "
      "many ranges whose partial products go to workspace, 4 * splits * m * n bytes (workspace_bytes: its size).");

  m.def(
      "bias_act_backward",
      [](uintptr_t dz, uintptr_t dbias, uintptr_t dy, uintptr_t z, int64_t m, int64_t n, const std::string& act,
         const std::string& dtype, uintptr_t stream) {
        const int code = act_code(act, "bias_act_backward");
        dispatch(dtype, "bias_act_backward", [&](auto t) {
          using T = decltype(t);
          check(lc::bias_act_backward(ptr<T>(dz), ptr<T>(dbias), ptr<const T>(dy), ptr<const T>(z), m, n, code,
                                      as_stream(stream)),
                "bias_act_backward");
        });
      },
      py::arg("dz"), py::arg("dbias"), py::arg("dy"), py::arg("z"), py::arg("m"), py::arg("n"), py::arg("act"),
      py::arg("dtype"), py::arg("stream"), py::call_guard<py::gil_scoped_release>());

  m.def(
      "conv2d_forward",
      [](uintptr_t y, uintptr_t x, uintptr_t w, uintptr_t bias, py::tuple geometry, int o, int groups,
         const std::string& dtype, uintptr_t stream, int splits, uintptr_t workspace, int64_t workspace_bytes, int rows,
         int blocks) {
        const lc::ConvShape s = conv_shape(geometry, o, groups);
        const lc::ConvPlan plan = conv_plan("conv2d_forward", rows, blocks);
        require_workspace("conv2d_forward", "conv2d_workspace_size", workspace, workspace_bytes,
                          conv_workspace(0, dtype, s, splits));
        py::gil_scoped_release release;
        dispatch_conv(dtype, "conv2d_forward", [&](auto t) {
          using T = decltype(t);
          check(lc::conv2d_forward(ptr<T>(y), ptr<void>(workspace), ptr<const T>(x), ptr<const T>(w),
                                   ptr<const T>(bias), s, splits, as_stream(stream), plan),
                "conv2d_forward");
        });
      },
      py::arg("y"), py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("geometry"), py::arg("o"), py::arg("groups"),
      py::arg("dtype"), py::arg("stream"), py::arg("splits") = 1, py::arg("workspace") = 0,
      py::arg("workspace_bytes") = 0, py::arg("rows") = 0, py::arg("blocks") = 0,
      "y = conv(x, w) + bias; splits > 1 cuts the reduction over C/G*KH*KW into that many ranges, whose fp32 "
      "partial sums are added in a fixed order.  workspace: conv2d_workspace_size('forward', ...) bytes (the "
      "partial sums, and the channels-last copies), workspace_bytes its size.  rows (32, 64, 128) and blocks "
      "(blocks per SM of the 128-row build, 1 or 2) choose the SIMT kernel; 0: lamina's rule.");
  m.def(
      "conv2d_forward_splits",
      [](py::tuple geometry, int o, int groups, const std::string& dtype) {
        if (dtype != "float32" && dtype != "float16" && dtype != "bfloat16")
          throw std::invalid_argument("conv2d_forward_splits: expected dtype float32, float16 or bfloat16, received " +
                                      dtype);
        return lc::conv2d_forward_splits(conv_shape(geometry, o, groups), dtype != "float32");
      },
      py::arg("geometry"), py::arg("o"), py::arg("groups"), py::arg("dtype") = "float32",
      "The split count lamina's forward convolution uses for this problem and dtype on the current device (1: no "
      "split).");

  m.def(
      "conv2d_backward_data",
      [](uintptr_t dx, uintptr_t dy, uintptr_t w, py::tuple geometry, int o, int groups, const std::string& dtype,
         uintptr_t stream, int rows, int blocks, uintptr_t workspace, int64_t workspace_bytes) {
        const lc::ConvShape s = conv_shape(geometry, o, groups);
        const lc::ConvPlan plan = conv_plan("conv2d_backward_data", rows, blocks);
        require_workspace("conv2d_backward_data", "conv2d_workspace_size", workspace, workspace_bytes,
                          conv_workspace(1, dtype, s, 1));
        py::gil_scoped_release release;
        dispatch_conv(dtype, "conv2d_backward_data", [&](auto t) {
          using T = decltype(t);
          check(lc::conv2d_backward_data(ptr<T>(dx), ptr<void>(workspace), ptr<const T>(dy), ptr<const T>(w), s,
                                         as_stream(stream), plan),
                "conv2d_backward_data");
        });
      },
      py::arg("dx"), py::arg("dy"), py::arg("w"), py::arg("geometry"), py::arg("o"), py::arg("groups"),
      py::arg("dtype"), py::arg("stream"), py::arg("rows") = 0, py::arg("blocks") = 0, py::arg("workspace") = 0,
      py::arg("workspace_bytes") = 0,
      "dx of a convolution; rows and blocks as for conv2d_forward; workspace: "
      "conv2d_workspace_size('backward_data', ...) bytes (0 for float32 and for the gathered kernels), "
      "workspace_bytes its size.");

  m.def(
      "conv2d_backward_weight",
      [](uintptr_t dw, uintptr_t workspace, int64_t workspace_bytes, uintptr_t dy, uintptr_t x, py::tuple geometry,
         int o, int groups, int splits, const std::string& dtype, uintptr_t stream, int rows) {
        const lc::ConvShape s = conv_shape(geometry, o, groups);
        const lc::ConvPlan plan = conv_plan("conv2d_backward_weight", rows, 0);
        require_workspace("conv2d_backward_weight", "conv2d_workspace_size", workspace, workspace_bytes,
                          conv_workspace(2, dtype, s, splits, dy));
        py::gil_scoped_release release;
        dispatch_conv(dtype, "conv2d_backward_weight", [&](auto t) {
          using T = decltype(t);
          check(lc::conv2d_backward_weight(ptr<T>(dw), ptr<void>(workspace), ptr<const T>(dy), ptr<const T>(x), s,
                                           splits, as_stream(stream), plan),
                "conv2d_backward_weight");
        });
      },
      py::arg("dw"), py::arg("workspace"), py::arg("workspace_bytes"), py::arg("dy"), py::arg("x"),
      py::arg("geometry"), py::arg("o"),
      py::arg("groups"), py::arg("splits"), py::arg("dtype"), py::arg("stream"), py::arg("rows") = 0,
      "dW of a convolution, its reduction over N*OH*OW cut into `splits` ranges (fp32 partial sums added in a "
      "fixed order); workspace: conv2d_workspace_size('backward_weight', ...) bytes, workspace_bytes its size; "
      "rows (32, 64, 128) chooses the SIMT kernel, 0: the rule.");
  m.def(
      "conv2d_workspace_size",
      [](const std::string& pass, py::tuple geometry, int o, int groups, const std::string& dtype, int splits,
         uintptr_t dy) {
        const int code = conv_pass(pass, "conv2d_workspace_size");
        if (splits < 1)
          throw std::invalid_argument("conv2d_workspace_size: expected splits >= 1, received " + std::to_string(splits));
        return conv_workspace(code, dtype, conv_shape(geometry, o, groups), splits, dy);
      },
      py::arg("pass_name"), py::arg("geometry"), py::arg("o"), py::arg("groups"), py::arg("dtype"), py::arg("splits") = 1,
      py::arg("dy") = 0,
      "Bytes of device workspace a convolution pass ('forward', 'backward_data' or 'backward_weight') needs with "
      "this many splits: fp32 partial sums, and the channels-last copies of 16-bit operands (0: none).  dy: "
      "backward-weight's dy (its device address), which wgmma's narrow kernels read without a copy where it "
      "starts on a 16-byte boundary; 0: the size for any dy.");
  m.def(
      "conv2d_on_wgmma",
      [](const std::string& pass, py::tuple geometry, int o, int groups, const std::string& dtype) {
        const int code = conv_pass(pass, "conv2d_on_wgmma");
        bool on = false;
        dispatch_conv(dtype, "conv2d_on_wgmma", [&](auto t) {
          on = lc::conv2d_on_wgmma<decltype(t)>(code, conv_shape(geometry, o, groups));
        });
        return on;
      },
      py::arg("pass_name"), py::arg("geometry"), py::arg("o"), py::arg("groups"), py::arg("dtype"),
      "Whether this convolution pass runs on the wgmma kernels (16-bit, channels-last, a device of compute "
      "capability 9.0, conv_wgmma() on); they run one block per SM, which the split rules count.");
  m.def(
      "conv2d_wgmma_tile",
      [](const std::string& pass, py::tuple geometry, int o, int groups, const std::string& dtype) {
        const int code = conv_pass(pass, "conv2d_wgmma_tile");
        int tile = 0;
        dispatch_conv(dtype, "conv2d_wgmma_tile", [&](auto t) {
          tile = lc::conv2d_wgmma_tile<decltype(t)>(code, conv_shape(geometry, o, groups));
        });
        return tile;
      },
      py::arg("pass_name"), py::arg("geometry"), py::arg("o"), py::arg("groups"), py::arg("dtype"),
      "The channel tile of this convolution pass on wgmma: 0 (not on wgmma), 128 (128 x 128 tiles, one block per "
      "SM) or 16, 32 or 64 (the narrow kernels for layers of at most 64 channels a group: 128 pixels or dW columns "
      "by that many channels, two blocks per SM).");

  m.def("device_count", &device_count, "CUDA devices visible to lamina's kernels (0 without a driver or device)");
  m.def("runtime_version", []() {
    int v = 0;
    cudaRuntimeGetVersion(&v);
    return v;
  });
  m.def("driver_version", []() {
    int v = 0;
    if (cudaDriverGetVersion(&v) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return v;
  });
  m.def(
      "tensor_core_gemm",
      [](py::object variant) {
        static const char* names[] = {"auto", "mma", "wgmma"};
        const int before = lc::tensor_core_gemm();
        if (!variant.is_none()) {
          const std::string v = variant.cast<std::string>();
          int code = -1;
          for (int i = 0; i < 3; ++i)
            if (v == names[i]) code = i;
          if (code < 0)
            throw std::invalid_argument("tensor_core_gemm: expected 'auto', 'mma' or 'wgmma', received '" + v + "'");
          lc::set_tensor_core_gemm(code);
        }
        return std::string(names[before]);
      },
      py::arg("variant") = py::none(),
      "The fp16/bf16 GEMM kernel: 'auto' (wgmma with TMA on compute capability 9.0 when the operands allow, else "
      "mma.sync), 'mma' or 'wgmma' (an error where it cannot run).  Returns the previous choice.");
  bind_switch(m, "conv_tile_fill", lc::conv_tile_fill, lc::set_conv_tile_fill,
              "Whether the convolution kernels halve their tile height (down to 32 rows) while the grid would leave "
              "multiprocessors idle (the default), or keep the height the channels give.  Returns the previous "
              "setting.");
  bind_switch(m, "conv_two_blocks", lc::conv_two_blocks, lc::set_conv_two_blocks,
              "Whether the forward and backward-data convolutions' 128-row kernels run two blocks per "
              "multiprocessor (the default: 128 registers, a few spilled) or one (no spills); forward's split-K "
              "rule counts its slots accordingly.  Returns the previous setting.");
  bind_switch(m, "conv_tensor_cores", lc::conv_tensor_cores, lc::set_conv_tensor_cores,
              "Whether float16/bfloat16 convolutions run on tensor cores (mma.sync, fp32 accumulation; the default) "
              "or on the SIMT core.  Returns the previous setting.");
  bind_switch(m, "conv_channels_last", lc::conv_channels_last, lc::set_conv_channels_last,
              "Whether float16/bfloat16 convolutions on tensor cores copy their operands channels-last and load "
              "them by cp.async where the channels per group are multiples of 8 (the default), or gather them from "
              "NCHW.  Returns the previous setting.");
  bind_switch(m, "conv_wgmma", lc::conv_wgmma, lc::set_conv_wgmma,
              "Whether the channels-last float16/bfloat16 convolutions (forward and both gradients) run on wgmma on "
              "devices of compute capability 9.0 (the default), or on mma.sync as elsewhere.  Returns the previous "
              "setting.");
  bind_switch(m, "conv_wgmma_narrow", lc::conv_wgmma_narrow, lc::set_conv_wgmma_narrow,
              "Whether wgmma convolution passes with at most 64 channels a group on the tile's row side take the "
              "narrow kernels (the default: the channels as wgmma's N, 16-64 wide) or the 128 x 128 ones.  Returns "
              "the previous setting.");
  m.attr("archs") = LAMINA_CUDA_ARCHS;
  m.attr("kernels") = py::make_tuple("relu_forward", "relu_backward", "gelu_forward", "gelu_backward", "dropout_forward", "gemm", "bias_act_backward", "softmax_xent",
                                      "ctc_loss", "sgd_update", "adam_update", "adam_variant_update", "rmsprop_update", "adagrad_update", "lerp_update", "unscale_grads", "batchnorm_forward", "batchnorm_backward", "maxpool2d_forward", "maxpool2d_backward", "softmax_forward", "softmax_backward", "layernorm_forward", "layernorm_backward", "lstm_cell_forward", "lstm_cell_backward", "gru_cell_forward", "gru_cell_backward", "conv2d_forward", "conv2d_backward_data",
                                      "conv2d_backward_weight");
}
