// CTC loss on the CPU: the forward-backward recursions of lamina.losses.CTCLoss
// (and csrc/cuda/ctc.cu), one sample per OpenMP task, in log space:
//   α_t(s) = log y_t(l'_s) + lse(α_(t-1)(s), α_(t-1)(s-1), [skip] α_(t-1)(s-2))
//   β_t(s) = log y_t(l'_s) + lse(β_(t+1)(s), β_(t+1)(s+1), [skip'] β_(t+1)(s+2))
//   nll = −lse(α_(T-1)(S'-1), α_(T-1)(S'-2))
//   grad[t, c] = −scale · Σ_(s: l'_s = c) exp(α_t(s) + β_t(s) − log y_t(c) + nll)
// NumPy runs each step over the whole batch as a handful of array passes with
// temporaries; here a sample's rows of α and β stay in cache, and the samples
// run in parallel.  In float32 each row is one vector loop (vector_loops.h:
// a three-way log-sum-exp per position, on AVX2 where the CPU has it); float64
// keeps the scalar log-add-exp.  The gradient sums each class's positions in
// order of s (deterministic).  Rows t >= T_n get 0; an infeasible sample (nll = inf)
// NaN before T_n, or 0 with zero_infinity, as PyTorch.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels.h"

namespace lamina {
namespace cpu {

namespace {

template <typename T>
inline T log_add(T a, T b) {
  const T neg = -std::numeric_limits<T>::infinity();
  if (a == neg) return b;
  if (b == neg) return a;
  const T m = a > b ? a : b;
  return m + std::log1p(std::exp(-std::fabs(a - b)));
}

}  // namespace

template <typename T>
void ctc_loss(T* nll, T* grad, T* alpha, T* beta, const T* lp, const int64_t* targets, const int64_t* input_lengths,
              const int64_t* target_lengths, const T* scale, int64_t t_max, int64_t n, int64_t c, int64_t s_max,
              int64_t st, int64_t sn, int blank, bool zero_infinity) {
  const T neg = -std::numeric_limits<T>::infinity();
  const int64_t width = 2 * s_max + 1;
  const CtcRowsF32 rows = ctc_rows_f32();
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t tn = input_lengths[i], wn = 2 * target_lengths[i] + 1;
    const int64_t* tg = targets + i * s_max;
    const T* y = lp + i * sn;
    auto label = [&](int64_t s) { return (s & 1) ? tg[s / 2] : int64_t(blank); };
    auto skip = [&](int64_t s) { return s >= 2 && (s & 1) && label(s) != label(s - 2); };
    constexpr bool vector_rows = std::is_same_v<T, float>;
    // float32: the sample's labels and skip terms once, and a row of emissions per step
    std::vector<int64_t> lab(vector_rows ? wn : 0);
    std::vector<T> skip_term(vector_rows ? wn : 0), emit(vector_rows ? wn : 0), w(vector_rows ? wn : 0);
    for (int64_t s = 0; s < static_cast<int64_t>(lab.size()); ++s) {
      lab[s] = label(s);
      skip_term[s] = skip(s) ? T(0) : neg;
    }
    auto emissions = [&](int64_t t) {
      for (int64_t s = 0; s < wn; ++s) emit[s] = y[t * st + lab[s]];
    };
    T* a = alpha + i * t_max * width;
    for (int64_t s = 0; s < width; ++s) a[s] = (s < wn && s <= 1) ? y[label(s)] : neg;
    for (int64_t t = 1; t < tn; ++t) {
      const T* prev = a + (t - 1) * width;
      T* cur = a + t * width;
      if constexpr (vector_rows) {
        emissions(t);
        rows.alpha(cur, prev, emit.data(), skip_term.data(), wn);
      } else {
        const T* yt = y + t * st;
        for (int64_t s = 0; s < wn; ++s) {
          T v = prev[s];
          if (s >= 1) v = log_add(v, prev[s - 1]);
          if (skip(s)) v = log_add(v, prev[s - 2]);
          cur[s] = v + yt[label(s)];
        }
      }
      std::fill(cur + wn, cur + width, neg);
    }
    const T* last = a + (tn - 1) * width;
    const T loss = -log_add(last[wn - 1], wn >= 3 ? last[wn - 2] : neg);
    nll[i] = loss;
    if (grad == nullptr) continue;
    const bool infeasible = !std::isfinite(loss);
    for (int64_t t = 0; t < t_max; ++t) {
      T* g = grad + t * st + i * sn;
      const T fill = (t >= tn || (infeasible && zero_infinity)) ? T(0) : (infeasible ? std::numeric_limits<T>::quiet_NaN() : T(0));
      std::fill(g, g + c, fill);
    }
    if (infeasible) continue;
    T* b = beta + i * t_max * width;
    for (int64_t s = 0; s < width; ++s) b[(tn - 1) * width + s] = (s < wn && s >= wn - 2) ? y[(tn - 1) * st + label(s)] : neg;
    for (int64_t t = tn - 2; t >= 0; --t) {
      const T* next = b + (t + 1) * width;
      T* cur = b + t * width;
      if constexpr (vector_rows) {
        emissions(t);
        rows.beta(cur, next, emit.data(), skip_term.data(), wn);
      } else {
        const T* yt = y + t * st;
        for (int64_t s = 0; s < wn; ++s) {
          T v = next[s];
          if (s + 1 < wn) v = log_add(v, next[s + 1]);
          if (s + 2 < wn && skip(s + 2)) v = log_add(v, next[s + 2]);
          cur[s] = v + yt[label(s)];
        }
      }
      std::fill(cur + wn, cur + width, neg);
    }
    const T k = -scale[i];
    for (int64_t t = 0; t < tn; ++t) {
      T* g = grad + t * st + i * sn;
      const T* at = a + t * width;
      const T* bt = b + t * width;
      if constexpr (vector_rows) {
        emissions(t);
        rows.posterior(w.data(), at, bt, emit.data(), loss, wn);
        for (int64_t s = 0; s < wn; ++s) g[lab[s]] += k * w[s];
      } else {
        const T* yt = y + t * st;
        for (int64_t s = 0; s < wn; ++s) {
          const int64_t cl = label(s);
          const T ly = yt[cl];
          if (ly != neg) g[cl] += k * std::exp(at[s] + bt[s] - ly + loss);
        }
      }
    }
  }
}

template void ctc_loss<float>(float*, float*, float*, float*, const float*, const int64_t*, const int64_t*,
                              const int64_t*, const float*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int,
                              bool);
template void ctc_loss<double>(double*, double*, double*, double*, const double*, const int64_t*, const int64_t*,
                               const int64_t*, const double*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                               int, bool);

}  // namespace cpu
}  // namespace lamina
