"""Variable-length sequences in one padded batch: a GRU given ``lengths`` and
a Transformer encoder given a ``src_key_padding_mask``, each next to the
same model trained without them.

The task: sequences of 2 to 32 tokens from {1, ..., 7}, padded to 32; the
label says whether token 1 occurs more often than token 2.  The padding is
filled with random tokens, not a pad symbol, so a model that reads it counts
the wrong tokens: only the masked models can solve the task.  (The others
still guess better than chance: early positions are more often real.)

    python examples/padded_sequences.py

On 2 CPU cores, 600 steps each, ~40 s in all: 1.000 test accuracy for both
masked models, 0.892 (GRU) and 0.882 (Transformer) for the ones that read
the padding.
"""

import numpy as np

import lamina as lm

VOCAB, LONGEST, SHORTEST, LONGEST_REAL = 8, 32, 2, 32


def make_data(n, rng):
    """(ids (N, LONGEST), lengths (N,), labels (N,)), padding random."""
    lengths = rng.integers(SHORTEST, LONGEST_REAL + 1, size=n)
    ids = rng.integers(1, VOCAB, size=(n, LONGEST))
    real = np.arange(LONGEST)[None, :] < lengths[:, None]
    ones, twos = ((ids == 1) & real).sum(axis=1), ((ids == 2) & real).sum(axis=1)
    keep = ones != twos  # no ties
    return ids[keep], lengths[keep], (ones > twos)[keep].astype(np.int64)


class GRUClassifier(lm.Layer):
    """Embedding → bidirectional GRU (final states) → Dense."""

    def __init__(self, masked):
        super().__init__()
        self.masked = masked
        self.embed = lm.Embedding(VOCAB, 16)
        self.gru = lm.GRU(16, 32, bidirectional=True, return_sequences=False)
        self.head = lm.Dense(64, 2)

    def forward(self, ids, lengths):
        return self.head(self.gru(self.embed(ids), lengths=lengths if self.masked else None))

    def backward(self, dy):
        self.embed.backward(self.gru.backward(self.head.backward(dy)))  # token ids get no gradient


class MaskedMean(lm.Layer):
    """The mean over a sequence's real positions, and its backward:

        y_n = Σ_t r_nt h_nt / ℓ_n,    dh_nt = r_nt dy_n / ℓ_n

    with r_nt = 1 for a real position, 0 for padding, and ℓ_n = Σ_t r_nt."""

    def forward(self, h, real):
        w = real[:, :, None] / real.sum(axis=1)[:, None, None]
        self._save(w, out=h[:, 0])
        return (h * w).sum(axis=1)

    def backward(self, dy):
        w = self._take_cache(dy)
        return dy[:, None, :] * w


class TransformerClassifier(lm.Layer):
    """Token and position embeddings → a pre-LN encoder layer → the mean
    over the real positions → Dense."""

    def __init__(self, masked):
        super().__init__()
        self.masked = masked
        self.embed = lm.Embedding(VOCAB, 32)
        self.position = lm.Embedding(LONGEST, 32)
        self.encoder = lm.TransformerEncoderLayer(32, 4, 64, dropout=0.0, norm_first=True)
        self.pool = MaskedMean()
        self.head = lm.Dense(32, 2)

    def forward(self, ids, lengths):
        real = np.arange(ids.shape[1])[None, :] < lengths[:, None]
        if not self.masked:
            real = np.ones_like(real)  # attends to, and averages over, the padding too
        h = self.embed(ids) + self.position(np.broadcast_to(np.arange(ids.shape[1]), ids.shape))
        h = self.encoder(h, src_key_padding_mask=~real)
        return self.head(self.pool(h, real.astype(np.float32)))

    def backward(self, dy):
        dh = self.encoder.backward(self.pool.backward(self.head.backward(dy)))
        self.embed.backward(dh)
        self.position.backward(dh)


def train(model, data, steps, batch_size=64, seed=0):
    """Adam on random batches; returns the test accuracy."""
    (ids, lengths, labels), (test_ids, test_lengths, test_labels) = data
    rng = np.random.default_rng(seed)
    loss_fn = lm.SoftmaxCrossEntropy()
    opt = lm.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        i = rng.integers(0, len(ids), size=batch_size)
        model.zero_grad()
        loss_fn(model(ids[i], lengths[i]), labels[i])
        model.backward(loss_fn.backward())
        opt.step()
    with lm.no_grad():
        return float((model(test_ids, test_lengths).argmax(axis=1) == test_labels).mean())


def main(steps=600, seed=0, verbose=True):
    """Train the four models; returns {name: test accuracy}."""
    rng = np.random.default_rng(seed)
    data = make_data(6000, rng), make_data(1000, rng)
    results = {}
    for name, make in [("GRU", GRUClassifier), ("Transformer", TransformerClassifier)]:
        for masked in (True, False):
            lm.manual_seed(seed)
            key = f"{name}, {'masked' if masked else 'reading the padding'}"
            results[key] = train(make(masked), data, steps, seed=seed)
            if verbose:
                print(f"{key:36s} test accuracy {results[key]:.3f}")
    return results


if __name__ == "__main__":
    main()
