"""lamina.decoding: CTC greedy and prefix beam search against brute force over
every path, and beam search against exhaustive enumeration, with and without
a KVCache."""

import itertools
import math

import numpy as np
import pytest
from harness import to_numpy

import lamina as lm
from lamina.decoding import beam_search, ctc_beam_search_decode, ctc_greedy_decode


def _log_softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def _brute_force_labellings(lp, blank):
    """{labelling: log-probability summed over every path} for one (T, C) input."""
    t, c = lp.shape
    out = {}
    for path in itertools.product(range(c), repeat=t):
        collapsed = tuple(k for i, k in enumerate(path) if k != blank and (i == 0 or k != path[i - 1]))
        out[collapsed] = np.logaddexp(out.get(collapsed, -math.inf), sum(lp[i, k] for i, k in enumerate(path)))
    return out


def test_ctc_greedy_merges_repeats_drops_blanks_and_honours_lengths(xp):
    c = 4
    path = [1, 1, 0, 1, 2, 2, 0, 0, 3]
    lp = np.full((len(path), 2, c), -5.0)
    for t, k in enumerate(path):
        lp[t, 0, k] = 0.0
        lp[t, 1, (k + 1) % c] = 0.0
    got = ctc_greedy_decode(xp.asarray(lp), input_lengths=np.array([9, 4]))
    assert got[0] == [1, 1, 2, 3]  # the blank between the 1s keeps both
    assert got[1] == [2, 1, 2]  # its path 2 2 1 2 3 3 1 1 0, cut at 4 steps
    assert ctc_greedy_decode(xp.asarray(lp.transpose(1, 0, 2)), batch_first=True, blank=3)[0] == [1, 0, 1, 2, 0]


@pytest.mark.parametrize("blank", [0, 2])
def test_ctc_prefix_beam_search_is_exact_with_a_wide_beam(blank, torch):
    rng = np.random.default_rng(blank)
    t, n, c = 5, 3, 3
    lp = _log_softmax(rng.standard_normal((t, n, c)) * 1.5)
    lengths = np.array([5, 4, 2])
    got = ctc_beam_search_decode(lp, lengths, beam_size=64, blank=blank, top_k=4)
    for i in range(n):
        brute = _brute_force_labellings(lp[: lengths[i], i], blank)
        ranked = sorted(brute.items(), key=lambda kv: kv[1], reverse=True)[:4]
        assert [tuple(lab) for lab, _ in got[i]] == [lab for lab, _ in ranked]
        np.testing.assert_allclose([s for _, s in got[i]], [s for _, s in ranked], rtol=1e-12)
        best, score = got[i][0]
        if best:  # its score is minus the CTC loss of that labelling
            loss = lm.CTCLoss(blank=blank, reduction="sum")(lp[: lengths[i], i : i + 1], np.array([best]),
                                                            np.array([lengths[i]]), np.array([len(best)]))
            np.testing.assert_allclose(score, -loss, rtol=1e-10)


def test_ctc_beam_search_finds_what_the_best_path_misses(xp):
    """Two steps of 0.6 blank / 0.4 label: the best path is blank, blank
    (0.36), but the labelling [1] has three paths, 0.64 in all."""
    lp = np.log(np.array([[[0.6, 0.4]], [[0.6, 0.4]]]))
    assert ctc_greedy_decode(xp.asarray(lp)) == [[]]
    [(best, score)] = ctc_beam_search_decode(xp.asarray(lp), beam_size=4)[0]
    assert best == [1] and score == pytest.approx(math.log(0.64))


def test_ctc_beam_search_prune_and_errors():
    rng = np.random.default_rng(3)
    lp = _log_softmax(rng.standard_normal((6, 2, 5)) * 3)
    full = ctc_beam_search_decode(lp, beam_size=16)
    pruned = ctc_beam_search_decode(lp, beam_size=16, prune=math.log(1e-3))
    assert [r[0][0] for r in pruned] == [r[0][0] for r in full]
    with pytest.raises(lm.ShapeError, match=r"ctc_beam_search_decode: expected log_probs as a 3-d array \(T, N, C\)"):
        ctc_beam_search_decode(lp[0])
    with pytest.raises(lm.ShapeError, match=r"expected input_lengths as 2 integers in \[0, 6\]"):
        ctc_beam_search_decode(lp, input_lengths=[7, 1])
    with pytest.raises(ValueError, match=r"expected blank in \[0, 5\), received 5"):
        ctc_greedy_decode(lp, blank=5)
    with pytest.raises(ValueError, match="beam_size and top_k >= 1"):
        ctc_beam_search_decode(lp, beam_size=0)


def _markov(v, seed):
    """A next-token table: log P(next | last), one row per last token."""
    return _log_softmax(np.random.default_rng(seed).standard_normal((v, v)) * 2)


def _brute_force_sequences(table, first, length, eos, alpha):
    """(best sequence, its log-probability) over every continuation of ``first``
    of ``length`` tokens, ended at the first EOS (padded with EOS after it)."""
    best, best_rank = None, -math.inf
    for seq in itertools.product(range(table.shape[0]), repeat=length):
        if eos is not None and eos in seq:
            end = seq.index(eos) + 1
            if any(s != eos for s in seq[end:]):
                continue  # the padded form is enumerated once
        else:
            end = length
        score, last = 0.0, first
        for s in seq[:end]:
            score, last = score + table[last, s], s
        rank = score / end**alpha if alpha else score
        if rank > best_rank + 1e-12:
            best, best_rank, best_score = seq, rank, score
    return list(best), best_score


@pytest.mark.parametrize("alpha", [0.0, 1.0])
@pytest.mark.parametrize("eos", [None, 3])
def test_beam_search_with_a_wide_beam_is_exhaustive(xp, eos, alpha):
    v, length = 4, 4
    table = _markov(v, seed=int(alpha * 10) + (eos or 0))
    dev_table = xp.asarray(table)

    def step(tokens, cache):
        return dev_table[tokens[:, -1]]

    start = xp.asarray(np.array([0, 2], dtype=np.int64))
    tokens, scores = beam_search(step, start, beam_size=v**length, max_length=length, eos=eos, length_penalty=alpha)
    tokens, scores = to_numpy(tokens), to_numpy(scores)
    for i, first in enumerate([0, 2]):
        seq, score = _brute_force_sequences(table, first, length, eos, alpha)
        assert tokens[i, 0] == first
        assert list(tokens[i, 1:]) == seq
        assert scores[i] == pytest.approx(score, rel=1e-12)


def test_beam_search_beats_greedy_and_width_one_is_greedy(xp):
    """A table where the best first token leads nowhere good: greedy (K = 1)
    takes it; a beam of 2 does not."""
    table = np.log(np.array([[0.01, 0.55, 0.44], [0.34, 0.33, 0.33], [0.01, 0.01, 0.98]]))
    dev = xp.asarray(table)

    def step(tokens, cache):
        return dev[tokens[:, -1]]

    start = xp.asarray(np.array([[0]], dtype=np.int64))
    greedy, gscore = beam_search(step, start, beam_size=1, max_length=2, length_penalty=0)
    beam, bscore = beam_search(step, start, beam_size=2, max_length=2, length_penalty=0)
    assert list(to_numpy(greedy)[0]) == [0, 1, 0] and list(to_numpy(beam)[0]) == [0, 2, 2]
    assert float(to_numpy(bscore)[0]) > float(to_numpy(gscore)[0])


def _seq2seq(seed):
    lm.manual_seed(seed)
    emb = lm.Embedding(7, 8)
    dec = lm.TransformerDecoder(lm.TransformerDecoderLayer(8, 2, 16, dropout=0.0, causal=True), 2)
    head = lm.Sequential(lm.Dense(8, 7), lm.LogSoftmax())
    return emb, dec, head


def test_beam_search_with_a_kv_cache_equals_the_full_prefix(xp):
    emb, dec, head = _seq2seq(0)
    for m in (emb, dec, head):
        m.to("cpu" if xp is np else "cuda").eval()
    memory = xp.asarray(np.random.default_rng(1).standard_normal((3, 5, 8)).astype(np.float32))
    k = 3

    def make_step(use_cache):
        mem = xp.repeat(memory, k, axis=0)

        def step(tokens, cache):
            x = emb(tokens[:, -1:] if use_cache else tokens)
            y = dec(x, mem, cache=cache) if use_cache else dec(x, mem)
            return head(y[:, -1])

        return step

    start = xp.asarray(np.array([1, 1, 1], dtype=np.int64))
    with lm.no_grad():
        full, full_scores = beam_search(make_step(False), start, beam_size=k, max_length=6, eos=0)
        cached, cached_scores = beam_search(make_step(True), start, beam_size=k, max_length=6, eos=0, cache=lm.KVCache())
    np.testing.assert_array_equal(to_numpy(cached), to_numpy(full))
    np.testing.assert_allclose(to_numpy(cached_scores), to_numpy(full_scores), rtol=1e-5)


def test_beam_search_errors():
    def step(tokens, cache):
        return np.zeros((tokens.shape[0] + 1, 3))

    with pytest.raises(lm.ShapeError, match=r"beam_search: expected start as \(N,\) or \(N, t0\) integer tokens"):
        beam_search(step, np.zeros(2), beam_size=2)
    with pytest.raises(lm.ShapeError, match=r"beam_search: expected step to return log-probabilities of shape \(4, V\), "
                                            r"received \(5, 3\)"):
        beam_search(step, np.zeros(2, dtype=np.int64), beam_size=2)
    with pytest.raises(ValueError, match="beam_size and max_length >= 1"):
        beam_search(step, np.zeros(2, dtype=np.int64), beam_size=0)
    with pytest.raises(ValueError, match=r"beam_search: expected eos in \[0, 3\), received 3"):
        beam_search(lambda t, c: np.zeros((t.shape[0], 3)), np.zeros(2, dtype=np.int64), eos=3)
