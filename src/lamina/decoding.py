"""Decoding: from a model's per-step scores to sequences.

* :func:`ctc_greedy_decode`: the best path of a CTC model, collapsed
  (repeats merged, blanks dropped).
* :func:`ctc_beam_search_decode`: CTC prefix beam search, which sums the
  probabilities of every alignment of a labelling, so it finds labellings the
  best path misses.
* :func:`beam_search`: beam search over an autoregressive model (a
  Transformer decoder with a :class:`lamina.KVCache`, an RNN), with length
  penalty and end-of-sequence handling.

The CTC decoders read log-probabilities (T, N, C), or (N, T, C) with
``batch_first``, on either backend; they copy them to the host once and
search there (the search is sequential and branchy, not GPU work).
``beam_search`` keeps the beams on the model's device: each step is one call
of your step function for all N·K beams, a top-k over K·V scores per sample,
and a reorder of the cache.
"""

import math

import numpy as np

from . import backend
from .errors import ShapeError


def _log_probs_on_host(log_probs, input_lengths, batch_first, name):
    if not backend.is_array(log_probs) or log_probs.ndim != 3:
        raise ShapeError(f"{name}: expected log_probs as a 3-d array ({'N, T' if batch_first else 'T, N'}, C), "
                         f"received {getattr(log_probs, 'shape', type(log_probs).__name__)}")
    lp = backend.to_device(log_probs, "cpu").astype(np.float64)
    if not batch_first:
        lp = lp.transpose(1, 0, 2)  # (N, T, C)
    n, t, _ = lp.shape
    if input_lengths is None:
        lengths = np.full(n, t, dtype=np.int64)
    else:
        lengths = np.asarray(backend.to_device(input_lengths, "cpu") if backend.is_array(input_lengths) else input_lengths)
        if lengths.shape != (n,) or lengths.dtype.kind not in "iu" or (lengths < 0).any() or (lengths > t).any():
            raise ShapeError(f"{name}: expected input_lengths as {n} integers in [0, {t}], received {lengths!r}")
    return lp, lengths.astype(np.int64)


def _check_blank(blank, c, name):
    if not isinstance(blank, (int, np.integer)) or not 0 <= blank < c:
        raise ValueError(f"{name}: expected blank in [0, {c}), received {blank!r}")


def ctc_greedy_decode(log_probs, input_lengths=None, blank=0, batch_first=False):
    """The best path: the most likely class at every step of each input,
    then repeats merged and blanks dropped.  Returns a list of N lists of
    class indices."""
    lp, lengths = _log_probs_on_host(log_probs, input_lengths, batch_first, "ctc_greedy_decode")
    _check_blank(blank, lp.shape[2], "ctc_greedy_decode")
    out = []
    for path, length in zip(lp.argmax(axis=2), lengths):
        path = path[:length]
        keep = np.ones(len(path), dtype=bool)
        keep[1:] = path[1:] != path[:-1]
        out.append([int(c) for c in path[keep] if c != blank])
    return out


def _logaddexp(a, b):
    return np.logaddexp(a, b) if a != -math.inf or b != -math.inf else -math.inf


def ctc_beam_search_decode(log_probs, input_lengths=None, beam_size=8, blank=0, batch_first=False, top_k=1,
                           prune=None):
    """CTC prefix beam search (Hannun et al., 2014), in log space.

    Each beam is a labelling prefix ℓ with two scores: the log-probability
    of all alignments of the steps so far that produce ℓ and end in a blank
    (p_b), or in ℓ's last label (p_nb).  A step extends each prefix by blank
    (p_b ← (p_b + p_nb)·y_blank), by its last label again without a blank
    between (p_nb ← p_nb·y_last: the repeat merges), or by a new label c
    (ℓc gets p_nb += (p_b + p_nb)·y_c, or only p_b·y_c when c repeats the
    last label); the ``beam_size`` prefixes of highest p_b + p_nb survive.

    Args:
        log_probs: (T, N, C) log-probabilities (a LogSoftmax's output), or
            (N, T, C) with ``batch_first``; either backend.
        input_lengths: N lengths (default: all T).
        beam_size: prefixes kept per step.
        top_k: labellings returned per sample, best first.
        prune: consider only classes with log-probability above this at a
            step (None: all), a common speed-up for large vocabularies.

    Returns:
        N lists of ``top_k`` pairs (labelling as a list of ints, its
        log-probability summed over alignments), best first.  With a beam
        that never prunes, the best one's score is minus the CTC loss of that
        labelling.
    """
    name = "ctc_beam_search_decode"
    lp, lengths = _log_probs_on_host(log_probs, input_lengths, batch_first, name)
    c = lp.shape[2]
    _check_blank(blank, c, name)
    if int(beam_size) < 1 or int(top_k) < 1:
        raise ValueError(f"{name}: expected beam_size and top_k >= 1, received {beam_size!r}, {top_k!r}")
    results = []
    for seq, length in zip(lp, lengths):
        beams = {(): (0.0, -math.inf)}  # prefix -> (log p_b, log p_nb)
        for t in range(length):
            y = seq[t]
            classes = range(c) if prune is None else [k for k in range(c) if y[k] > prune or k == blank]
            nxt = {}

            def add(prefix, pb, pnb):
                ob, onb = nxt.get(prefix, (-math.inf, -math.inf))
                nxt[prefix] = (_logaddexp(ob, pb), _logaddexp(onb, pnb))

            for prefix, (pb, pnb) in beams.items():
                total = _logaddexp(pb, pnb)
                last = prefix[-1] if prefix else None
                for k in classes:
                    if k == blank:
                        add(prefix, total + y[k], -math.inf)
                    elif k == last:
                        add(prefix, -math.inf, pnb + y[k])  # the repeat merges into the same label
                        add(prefix + (k,), -math.inf, pb + y[k])  # a blank between: a new label
                    else:
                        add(prefix + (k,), -math.inf, total + y[k])
            ranked = sorted(nxt.items(), key=lambda kv: _logaddexp(*kv[1]), reverse=True)
            beams = dict(ranked[: int(beam_size)])
        ranked = sorted(((list(p), float(_logaddexp(*s))) for p, s in beams.items()), key=lambda r: r[1], reverse=True)
        results.append(ranked[: int(top_k)])
    return results


def beam_search(step, start, beam_size=4, max_length=50, eos=None, length_penalty=1.0, cache=None):
    """Beam search over an autoregressive model.

    Args:
        step: ``step(tokens, cache) -> log_probs``: given the tokens so far
            (N·K, t) as int64 on the model's device (each sample's K beams
            in consecutive rows), return the next token's log-probabilities
            (N·K, V).  With a :class:`lamina.KVCache` the step feeds only the
            last column (``tokens[:, -1:]``); without one, the whole prefix.
        start: (N,) or (N, t0) int tokens to start from (a BOS column, or a prompt).
        beam_size: K, beams kept per sample.
        max_length: tokens generated at most (after ``start``).
        eos: the end-of-sequence token: a beam that emits it is finished and
            stays as it is; the search stops when every sample's best K are
            finished.  None: every beam runs ``max_length`` tokens.
        length_penalty: finished beams are ranked by score / length^α
            (α = length_penalty, the length counting generated tokens, EOS
            included; 0 ranks by the raw log-probability).
        cache: a KVCache the step uses; its rows are reordered to follow
            the surviving beams (:meth:`KVCache.reorder`).

    Returns:
        (tokens, scores): the best sequence per sample as an (N, t0 + L)
        int64 array on the model's device, padded after EOS with ``eos``
        (L the longest generated length), and its log-probability (N,)
        float64, unpenalised.

    Call under :func:`lamina.no_grad`; the step runs N·K rows at once.
    """
    name = "beam_search"
    if not backend.is_array(start) or start.dtype.kind not in "iu" or start.ndim not in (1, 2) or start.shape[0] < 1:
        raise ShapeError(f"{name}: expected start as (N,) or (N, t0) integer tokens, received "
                         f"{getattr(start, 'shape', type(start).__name__)}")
    if int(beam_size) < 1 or int(max_length) < 1:
        raise ValueError(f"{name}: expected beam_size and max_length >= 1, received {beam_size!r}, {max_length!r}")
    xp = backend.get_array_module(start)
    k = int(beam_size)
    start = start.astype(np.int64).reshape(start.shape[0], -1)
    n = start.shape[0]
    tokens = xp.repeat(start, k, axis=0)  # (N·K, t0)
    if cache is not None:
        cache.reorder(xp.repeat(xp.arange(n), k))
    # Only the first beam of each sample is live at the start, so the K beams do not repeat one another.
    scores = xp.full((n, k), -math.inf, dtype=np.float64)
    scores[:, 0] = 0.0
    finished = xp.zeros((n, k), dtype=bool)
    lengths = xp.zeros((n, k), dtype=np.int64)  # generated tokens, EOS included
    for _ in range(int(max_length)):
        log_probs = step(tokens, cache)
        if not backend.is_array(log_probs) or log_probs.ndim != 2 or log_probs.shape[0] != n * k:
            raise ShapeError(f"{name}: expected step to return log-probabilities of shape ({n * k}, V), received "
                             f"{getattr(log_probs, 'shape', type(log_probs).__name__)}")
        v = log_probs.shape[1]
        if eos is not None and not (isinstance(eos, (int, np.integer)) and 0 <= eos < v):
            raise ValueError(f"{name}: expected eos in [0, {v}), received {eos!r}")
        lp = log_probs.astype(np.float64).reshape(n, k, v)
        if eos is not None:  # a finished beam continues only by repeating EOS, at no cost
            frozen = xp.full((v,), -math.inf)
            frozen[eos] = 0.0
            lp = xp.where(finished[:, :, None], frozen, lp)
        cand = (scores[:, :, None] + lp).reshape(n, k * v)
        best = xp.argsort(-cand, axis=1, kind="stable")[:, :k]  # (N, K): beam b·V + token
        beam, token = best // v, best % v
        rows = (xp.arange(n)[:, None] * k + beam).reshape(-1)
        scores = xp.take_along_axis(cand, best, axis=1)
        was_finished = xp.take_along_axis(finished, beam, axis=1)
        lengths = xp.take_along_axis(lengths, beam, axis=1) + (~was_finished)
        tokens = xp.concatenate([tokens[rows], token.reshape(-1, 1)], axis=1)
        finished = was_finished | (token == eos) if eos is not None else was_finished
        if cache is not None:
            cache.reorder(rows)
        if eos is not None and bool(finished.all()):
            break
    ranked = scores / xp.maximum(lengths, 1).astype(np.float64) ** float(length_penalty) if length_penalty else scores
    pick = xp.argmax(ranked, axis=1)
    rows = xp.arange(n) * k + pick
    return tokens[rows], scores[xp.arange(n), pick]
