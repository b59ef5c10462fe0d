"""Build lamina's CUDA kernels (every csrc/cuda/*.cu) as a host
shared library that runs them on emulated blocks (emu.h), for tests on
machines without a GPU.  Returns None, with the reason, when no C++20
compiler or no CUDA headers are found."""

import concurrent.futures
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CUDA_SRC = ROOT / "csrc" / "cuda"
HERE = Path(__file__).resolve().parent
SOURCES = ["gemm.cu", "conv.cu", "conv_wgmma.cu", "gemm_tc.cu", "gemm_wgmma.cu", "activations.cu", "softmax_xent.cu", "optim.cu", "batchnorm.cu", "pool.cu", "rowwise.cu", "rnn.cu", "ctc.cu"]
DYNAMIC_SHARED = re.compile(r"extern __shared__ .*?(\w+)\[\];")
LAUNCH = re.compile(r"^(\s*)(.+?)<<<(.+?)>>>\((.*)\);\s*$")


def _cuda_include():
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "include" / "cuda_runtime.h").is_file():
            return Path(home) / "include"
    nvcc = shutil.which("nvcc")
    if nvcc:
        inc = Path(nvcc).resolve().parents[1] / "include"
        if (inc / "cuda_runtime.h").is_file():
            return inc
    return None


def rewrite(source):
    """The kernel source with each launch turned into emu::launch(grid, block, smem, stream, [&] { k(args); })."""
    out = []
    lines = source.splitlines()
    # a kernel name whose <<< went to the next line (clang-format's choice for long template arguments)
    for i in range(len(lines) - 1, 0, -1):
        if lines[i].lstrip().startswith("<<<") and "<<<" not in lines[i - 1]:
            lines[i - 1] = lines[i - 1].rstrip() + lines.pop(i).strip()
    lines = iter(lines)
    for line in lines:
        while "<<<" in line and not line.rstrip().endswith(";"):  # a launch over several lines
            line = line.rstrip() + " " + next(lines).strip()
        m = LAUNCH.match(line)
        if m:
            indent, kernel, config, args = m.groups()
            # the kernel as the launch names it (template arguments as written), for tests of which build ran
            line = (f"{indent}{{ emu::launched += R\"({kernel.strip()})\" \"\\n\"; "
                    f"emu::launch({config}, [&] {{ {kernel}({args}); }}); }}")
        line = DYNAMIC_SHARED.sub(r"unsigned char* \1 = emu::dyn_smem_start;", line)
        out.append(line)
    return "#include \"emu.h\"\n" + "\n".join(out) + "\n"


GLUE = r'''
#include "emu.h"
#include "launchers.h"
#include "simt_gemm.cuh"
#include "wgmma_primitives.cuh"
namespace lc = lamina::cuda;
extern "C" {
int emu_sgemm(float* c, float* aux, const float* a, const float* b, const float* bias, int64_t m, int64_t n, int64_t k,
              int64_t lda, int64_t ldb, int64_t ldc, int ta, int tb, int act) {
  return lc::gemm<float, float>(c, aux, a, b, bias, m, n, k, lda, ldb, ldc, ta, tb, act, nullptr);
}
int emu_sgemm_split(float* c, float* aux, float* ws, int splits, const float* a, const float* b, const float* bias,
                    int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc, int ta, int tb, int act) {
  return lc::sgemm_split_k(c, aux, ws, splits, a, b, bias, m, n, k, lda, ldb, ldc, ta, tb, act, nullptr);
}
int emu_gemm_tc(void* c, void* aux, const void* a, const void* b, const void* bias, int64_t m, int64_t n, int64_t k,
                int64_t lda, int64_t ldb, int64_t ldc, int ta, int tb, int act, int bf16, int out_f32) {
  using H = __half;
  using B = __nv_bfloat16;
  if (!bf16 && !out_f32)
    return lc::gemm<H, H>((H*)c, (H*)aux, (const H*)a, (const H*)b, (const H*)bias, m, n, k, lda, ldb, ldc, ta, tb, act, nullptr);
  if (!bf16)
    return lc::gemm<H, float>((float*)c, (float*)aux, (const H*)a, (const H*)b, (const H*)bias, m, n, k, lda, ldb, ldc, ta, tb, act, nullptr);
  if (!out_f32)
    return lc::gemm<B, B>((B*)c, (B*)aux, (const B*)a, (const B*)b, (const B*)bias, m, n, k, lda, ldb, ldc, ta, tb, act, nullptr);
  return lc::gemm<B, float>((float*)c, (float*)aux, (const B*)a, (const B*)b, (const B*)bias, m, n, k, lda, ldb, ldc, ta, tb, act, nullptr);
}
int emu_gemm_wgmma(void* c, void* aux, const void* a, const void* b, const void* bias, int64_t m, int64_t n, int64_t k,
                   int64_t lda, int64_t ldb, int64_t ldc, int ta, int tb, int act, int bf16, int out_f32) {
  using H = __half;
  using B = __nv_bfloat16;
  lc::emu_wg::failed = false;
  const int rc = bf16 ? lc::gemm_wgmma<B>(c, aux, out_f32, (const B*)a, (const B*)b, (const B*)bias, m, n, k, lda, ldb,
                                          ldc, ta, tb, act, nullptr)
                      : lc::gemm_wgmma<H>(c, aux, out_f32, (const H*)a, (const H*)b, (const H*)bias, m, n, k, lda, ldb,
                                          ldc, ta, tb, act, nullptr);
  return lc::emu_wg::failed ? -1 : rc;
}
// lazy: TMA copies land when waited for (else at once); sms: the SM count the launcher sees.
void emu_wgmma_setup(int lazy, int sms) {
  lc::emu_wg::lazy_tma = lazy != 0;
  emu::sm_count = sms;
}
int emu_bias_act_backward(float* dz, float* db, const float* dy, const float* z, int64_t m, int64_t n, int act) {
  return lc::bias_act_backward<float>(dz, db, dy, z, m, n, act, nullptr);
}
int emu_relu(float* out, const float* a, const float* b, int64_t n, int backward) {
  return backward ? lc::relu_backward<float>(out, a, b, n, nullptr) : lc::relu_forward<float>(out, a, n, nullptr);
}
int emu_gelu(float* out, const float* a, const float* b, int64_t n, int tanh_approx, int backward) {
  return backward ? lc::gelu_backward<float>(out, a, b, n, tanh_approx, nullptr)
                  : lc::gelu_forward<float>(out, a, n, tanh_approx, nullptr);
}
int emu_softmax_xent(void* loss, void* dlogits, const void* logits, const int64_t* labels, int64_t n, int64_t c,
                     double smoothing, double grad_scale, int dbl) {
  if (dbl)
    return lc::softmax_xent<double>((double*)loss, (double*)dlogits, (const double*)logits, labels, n, c, smoothing,
                                    grad_scale, nullptr);
  return lc::softmax_xent<float>((float*)loss, (float*)dlogits, (const float*)logits, labels, n, c, smoothing,
                                 grad_scale, nullptr);
}
// ptrs: count rows of 6 addresses (SGD: p, grad, buf; Adam: p, grad, m, v, then v max with amsgrad, then the step
// count when capturable); s0, s1 per tensor.
static std::vector<lc::MultiTensor> tensors(int count, void* const* ptrs, const int64_t* sizes, const double* s0,
                                            const double* s1) {
  std::vector<lc::MultiTensor> t(count);
  for (int i = 0; i < count; ++i) {
    void* const* r = ptrs + 6 * i;
    t[i] = {{r[0], r[1], r[2], r[3], r[4], r[5]}, sizes[i], s0[i], s1[i]};
  }
  return t;
}
int emu_sgd_update(int dbl, int count, void* const* ptrs, const int64_t* sizes, const double* first, const double* unused,
                   double lr, double momentum, double dampening, double weight_decay, int nesterov) {
  const auto t = tensors(count, ptrs, sizes, first, unused);
  return dbl ? lc::sgd_update<double>(t, lr, momentum, dampening, weight_decay, nesterov, nullptr)
             : lc::sgd_update<float>(t, lr, momentum, dampening, weight_decay, nesterov, nullptr);
}
int emu_adam_update(int dbl, int count, void* const* ptrs, const int64_t* sizes, const double* step_sizes,
                    const double* bc2_sqrts, double lr, double beta1, double beta2, double eps, double weight_decay,
                    int decoupled, int amsgrad, int capturable) {
  const auto t = tensors(count, ptrs, sizes, step_sizes, bc2_sqrts);
  return dbl ? lc::adam_update<double>(t, lr, beta1, beta2, eps, weight_decay, decoupled, amsgrad, capturable, nullptr)
             : lc::adam_update<float>(t, lr, beta1, beta2, eps, weight_decay, decoupled, amsgrad, capturable, nullptr);
}
int emu_rmsprop_update(int dbl, int count, void* const* ptrs, const int64_t* sizes, const double* unused, double lr,
                       double alpha, double eps, double weight_decay, double momentum, int centered) {
  const auto t = tensors(count, ptrs, sizes, unused, unused);
  return dbl ? lc::rmsprop_update<double>(t, lr, alpha, eps, weight_decay, momentum, centered, nullptr)
             : lc::rmsprop_update<float>(t, lr, alpha, eps, weight_decay, momentum, centered, nullptr);
}
int emu_adagrad_update(int dbl, int count, void* const* ptrs, const int64_t* sizes, const double* clrs,
                       const double* unused, double eps, double weight_decay) {
  const auto t = tensors(count, ptrs, sizes, clrs, unused);
  return dbl ? lc::adagrad_update<double>(t, eps, weight_decay, nullptr)
             : lc::adagrad_update<float>(t, eps, weight_decay, nullptr);
}
int emu_lerp_update(int dbl, int count, void* const* ptrs, const int64_t* sizes, const double* unused, double weight) {
  const auto t = tensors(count, ptrs, sizes, unused, unused);
  return dbl ? lc::lerp_update<double>(t, weight, nullptr) : lc::lerp_update<float>(t, weight, nullptr);
}
int emu_ctc_loss(int dbl, void* nll, void* grad, void* alpha, void* beta, const void* lp, const int64_t* targets,
                 const int64_t* il, const int64_t* tl, const void* scale, int64_t t_max, int64_t n, int64_t c,
                 int64_t s_max, int64_t st, int64_t sn, int blank, int zero_infinity) {
  if (dbl)
    return lc::ctc_loss<double>((double*)nll, (double*)grad, (double*)alpha, (double*)beta, (const double*)lp, targets,
                                il, tl, (const double*)scale, t_max, n, c, s_max, st, sn, blank, zero_infinity, nullptr);
  return lc::ctc_loss<float>((float*)nll, (float*)grad, (float*)alpha, (float*)beta, (const float*)lp, targets, il, tl,
                             (const float*)scale, t_max, n, c, s_max, st, sn, blank, zero_infinity, nullptr);
}
int emu_unscale_grads(int dbl, int count, void* const* ptrs, const int64_t* sizes, const double* unused,
                      double inv_scale, int* found_inf) {
  const auto t = tensors(count, ptrs, sizes, unused, unused);
  return dbl ? lc::unscale_grads<double>(t, inv_scale, found_inf, nullptr)
             : lc::unscale_grads<float>(t, inv_scale, found_inf, nullptr);
}
int emu_batchnorm_slices(int64_t n, int64_t c, int64_t l) { return lc::batchnorm_slices(n, c, l); }
int emu_batchnorm_forward(int dbl, void* y, void* xhat, void* mean, void* var, void* inv_std, void* rm, void* rv,
                          double* ws, const void* x, const void* gamma, const void* beta, int64_t n, int64_t c,
                          int64_t l, double eps, int batch_stats, double f) {
  if (dbl)
    return lc::batchnorm_forward<double>((double*)y, (double*)xhat, (double*)mean, (double*)var, (double*)inv_std,
                                         (double*)rm, (double*)rv, ws, (const double*)x, (const double*)gamma,
                                         (const double*)beta, n, c, l, eps, batch_stats, f, nullptr);
  return lc::batchnorm_forward<float>((float*)y, (float*)xhat, (float*)mean, (float*)var, (float*)inv_std, (float*)rm,
                                      (float*)rv, ws, (const float*)x, (const float*)gamma, (const float*)beta, n, c, l,
                                      eps, batch_stats, f, nullptr);
}
int emu_batchnorm_backward(int dbl, void* dx, void* dgamma, void* dbeta, double* ws, const void* dy, const void* xhat,
                           const void* gamma, const void* inv_std, int64_t n, int64_t c, int64_t l, int batch_stats) {
  if (dbl)
    return lc::batchnorm_backward<double>((double*)dx, (double*)dgamma, (double*)dbeta, ws, (const double*)dy,
                                          (const double*)xhat, (const double*)gamma, (const double*)inv_std, n, c, l,
                                          batch_stats, nullptr);
  return lc::batchnorm_backward<float>((float*)dx, (float*)dgamma, (float*)dbeta, ws, (const float*)dy,
                                       (const float*)xhat, (const float*)gamma, (const float*)inv_std, n, c, l,
                                       batch_stats, nullptr);
}
// g: lamina.ops.Geometry's 14 fields
static lc::PoolShape pool_shape(const int64_t* g) {
  return lc::PoolShape{g[0] * g[1], int(g[2]), int(g[3]), int(g[12]), int(g[13]), int(g[4]), int(g[5]), int(g[6]),
                       int(g[7]),   int(g[8]), int(g[9]), int(g[10]), int(g[11])};
}
int emu_maxpool2d(int dbl, int backward, void* out, int64_t* idx, const void* in, const int64_t* g) {
  if (backward)
    return dbl ? lc::maxpool2d_backward<double>((double*)out, (const double*)in, idx, pool_shape(g), nullptr)
               : lc::maxpool2d_backward<float>((float*)out, (const float*)in, idx, pool_shape(g), nullptr);
  return dbl ? lc::maxpool2d_forward<double>((double*)out, idx, (const double*)in, pool_shape(g), nullptr)
             : lc::maxpool2d_forward<float>((float*)out, idx, (const float*)in, pool_shape(g), nullptr);
}
int emu_layernorm_row_chunks(int64_t rows, int64_t d) { return lc::layernorm_row_chunks(rows, d); }
int emu_softmax(int dbl, int backward, void* out, const void* a, const void* b, int64_t rows, int64_t d, double scale) {
  if (backward)
    return dbl ? lc::softmax_backward<double>((double*)out, (const double*)a, (const double*)b, rows, d, scale, nullptr)
               : lc::softmax_backward<float>((float*)out, (const float*)a, (const float*)b, rows, d, scale, nullptr);
  return dbl ? lc::softmax_forward<double>((double*)out, (const double*)a, rows, d, scale, nullptr)
             : lc::softmax_forward<float>((float*)out, (const float*)a, rows, d, scale, nullptr);
}
int emu_layernorm_forward(int dbl, void* y, void* xhat, void* rstd, const void* x, const void* w, const void* b,
                          int64_t rows, int64_t d, double eps) {
  if (dbl)
    return lc::layernorm_forward<double>((double*)y, (double*)xhat, (double*)rstd, (const double*)x, (const double*)w,
                                         (const double*)b, rows, d, eps, nullptr);
  return lc::layernorm_forward<float>((float*)y, (float*)xhat, (float*)rstd, (const float*)x, (const float*)w,
                                      (const float*)b, rows, d, eps, nullptr);
}
int emu_layernorm_backward(int dbl, void* dx, void* dw, void* db, double* ws, const void* dy, const void* xhat,
                           const void* rstd, const void* w, int64_t rows, int64_t d) {
  if (dbl)
    return lc::layernorm_backward<double>((double*)dx, (double*)dw, (double*)db, ws, (const double*)dy,
                                          (const double*)xhat, (const double*)rstd, (const double*)w, rows, d, nullptr);
  return lc::layernorm_backward<float>((float*)dx, (float*)dw, (float*)db, ws, (const float*)dy, (const float*)xhat,
                                       (const float*)rstd, (const float*)w, rows, d, nullptr);
}
int emu_dropout(int dbl, void* y, void* mask, const void* x, int64_t n, double p, unsigned long long key,
                int64_t offset) {
  return dbl ? lc::dropout_forward<double>((double*)y, (double*)mask, (const double*)x, n, p, key, offset, nullptr)
             : lc::dropout_forward<float>((float*)y, (float*)mask, (const float*)x, n, p, key, offset, nullptr);
}
// Kernel launches since the last call.
int emu_launches() {
  const int n = emu::launches;
  emu::launches = 0;
  return n;
}
// The kernels launched since the last call, one a line, as their launches name them.
const char* emu_launched() {
  static std::string names;
  names = emu::launched;
  emu::launched.clear();
  return names.c_str();
}
static lc::ConvShape shape(const int* g) {
  return lc::ConvShape{g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]};
}
int emu_conv2d_forward(float* y, float* ws, const float* x, const float* w, const float* bias, const int* g,
                       int splits) {
  return lc::conv2d_forward<float>(y, ws, x, w, bias, shape(g), splits, nullptr);
}
int emu_conv2d_planned(int pass, float* out, float* ws, const float* a, const float* b, const int* g, int splits,
                       int rows, int blocks) {
  const lc::ConvPlan plan{rows, blocks};
  if (pass == 0) return lc::conv2d_forward<float>(out, ws, a, b, nullptr, shape(g), splits, nullptr, plan);
  if (pass == 1) return lc::conv2d_backward_data<float>(out, nullptr, a, b, shape(g), nullptr, plan);
  return lc::conv2d_backward_weight<float>(out, ws, a, b, shape(g), splits, nullptr, plan);
}
long long emu_conv2d_workspace_size(int pass, const int* g, int splits) {
  return lc::conv2d_workspace_size<float>(pass, shape(g), splits);
}
int emu_conv2d_forward_splits(const int* g, int sms, int two_blocks) {
  const int before = emu::sm_count;
  const bool blocks_before = lc::conv_two_blocks();
  emu::sm_count = sms;
  lc::set_conv_two_blocks(two_blocks != 0);
  const int splits = lc::conv2d_forward_splits(shape(g));
  emu::sm_count = before;
  lc::set_conv_two_blocks(blocks_before);
  return splits;
}
int emu_conv2d_backward_data(float* dx, const float* dy, const float* w, const int* g) {
  return lc::conv2d_backward_data<float>(dx, nullptr, dy, w, shape(g), nullptr);
}
int emu_conv2d_backward_weight(float* dw, float* ws, const float* dy, const float* x, const int* g, int splits) {
  return lc::conv2d_backward_weight<float>(dw, ws, dy, x, shape(g), splits, nullptr);
}
}
'''


def _flags(sanitize):
    """(compiler command with flags, None) or (None, why there is none)."""
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if cxx is None:
        return None, "no C++ compiler"
    inc = _cuda_include()
    if inc is None:
        return None, "CUDA headers not found (set CUDA_HOME)"
    # address also gets undefined: misaligned vector loads (a fault on a GPU, silent on x86), overflowing
    # signed index arithmetic, shifts out of range
    checks = "address,undefined" if sanitize == "address" else sanitize
    opt = [f"-fsanitize={checks}", "-fno-sanitize-recover=all", "-O1", "-g", "-fno-omit-frame-pointer"] if sanitize else ["-O2"]
    return [cxx, "-std=c++20", *opt, "-fPIC", "-pthread", "-w", f"-I{HERE}", f"-I{CUDA_SRC}", f"-I{inc}"], None


def _sanitized_flags():
    """(sanitizer, compiler command, None) for ``LAMINA_EMU_SANITIZE`` ('' for
    none, 'address' or 'thread'), or (sanitizer, None, why there is none)."""
    sanitize = os.environ.get("LAMINA_EMU_SANITIZE", "")
    if sanitize not in ("", "address", "thread"):
        return sanitize, None, f"LAMINA_EMU_SANITIZE must be 'address' or 'thread', not {sanitize!r}"
    flags, why = _flags(sanitize)
    return sanitize, flags, why


def _link(flags, sources, extra, out):
    """Compile ``sources`` ({file name: text}) side by side in out's folder and link them into the shared library ``out``."""
    work = out.parent
    files = []
    for name, text in sources.items():
        p = work / name
        p.write_text(text)
        files.append(p)

    def compile_one(src):  # one translation unit per kernel file, compiled side by side
        obj = src.with_suffix(f".{os.getpid()}.o")
        r = subprocess.run([*flags, *extra, "-c", str(src), "-o", str(obj)], capture_output=True, text=True, check=False)
        return obj, r

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        compiled = list(pool.map(compile_one, files))
    failed = [r.stderr for _, r in compiled if r.returncode != 0]
    tmp = work / f"{out.name}.{os.getpid()}.tmp"
    if not failed:
        r = subprocess.run([*flags, "-shared", *(str(o) for o, _ in compiled), "-o", str(tmp)], capture_output=True,
                           text=True, check=False)
        failed = [r.stderr] if r.returncode != 0 else []
    for obj, _ in compiled:
        obj.unlink(missing_ok=True)
    if failed:
        raise RuntimeError(f"building {out.name} failed:\n" + failed[0][-4000:])
    os.replace(tmp, out)


def _kernel_sources():
    return {name + ".cpp": rewrite((CUDA_SRC / name).read_text()) for name in SOURCES}


def _digest(*parts):
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
    for f in sorted(CUDA_SRC.glob("*.cuh")) + sorted(HERE.glob("*.cuh")) + sorted(HERE.glob("*.h")) + [CUDA_SRC / "launchers.h"]:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def build():
    """(ctypes library, None) or (None, why it could not be built).

    ``LAMINA_EMU_SANITIZE=address`` or ``=thread`` builds the emulator with
    that sanitizer (the process must have loaded its runtime first: see
    ``tests/emu/sanitize.py``)."""
    sanitize, flags, why = _sanitized_flags()
    if flags is None:
        return None, why
    sources = _kernel_sources()
    sources["glue.cpp"] = GLUE
    work = Path(tempfile.gettempdir()) / f"lamina-emu-{_digest(*sources.values(), sanitize)}"
    lib = work / "libemu.so"
    if not lib.is_file():
        work.mkdir(parents=True, exist_ok=True)
        _link(flags, sources, [], lib)
    return ctypes.CDLL(str(lib)), None


def build_module():
    """(path of lamina._C_cuda built over the emulated kernels, None) or
    (None, why it could not be built).  The module is
    csrc/bindings/cuda_module.cpp itself, compiled with tests/emu/emu_runtime.h
    answering its CUDA runtime calls for one emulated device: the bindings,
    their argument checks and the launchers are the ones a GPU runs.
    ``LAMINA_EMU_SANITIZE`` builds it under a sanitizer, as for :func:`build`."""
    import sysconfig  # noqa: PLC0415

    try:
        import pybind11  # noqa: PLC0415
    except ImportError:
        return None, "pybind11 is not installed"
    sanitize, flags, why = _sanitized_flags()
    if flags is None:
        return None, why
    bindings = (ROOT / "csrc" / "bindings" / "cuda_module.cpp").read_text()
    sources = _kernel_sources()
    sources["cuda_module.cpp"] = '#include "emu_runtime.h"\n' + bindings.replace('"../cuda/launchers.h"', '"launchers.h"')
    python = [f"-I{sysconfig.get_paths()['include']}", f"-I{pybind11.get_include()}",
              '-DLAMINA_CUDA_ARCHS="sm_80 sm_90 sm_90a (emulated)"']
    work = Path(tempfile.gettempdir()) / f"lamina-emu-module-{_digest(*sources.values(), *python, sanitize)}"
    out = work / ("_C_cuda" + sysconfig.get_config_var("EXT_SUFFIX"))
    if not out.is_file():
        work.mkdir(parents=True, exist_ok=True)
        _link(flags, sources, python, out)
    return out, None
