"""Variable-length sequences in one padded batch."""

import numpy as np

from .. import backend


def pad_sequence(sequences, batch_first=True, padding_value=0, padding_side="right"):
    """Stack sequences of different lengths into one padded array, with
    their lengths (PyTorch's ``nn.utils.rnn.pad_sequence``, which returns the
    array alone; lamina's recurrent layers take ``lengths=`` instead of a
    packed sequence).

    Args:
        sequences: arrays of shape (L_i, *) with the same trailing shape,
            dtype and device (NumPy or CuPy), L_i >= 0.
        batch_first: (N, L, *) when True (lamina's default, as its layers),
            (L, N, *) otherwise (PyTorch's default).
        padding_value: what fills the padding.
        padding_side: ``"right"`` (after each sequence, what ``lengths=`` and
            ``key_padding_mask`` expect) or ``"left"``.

    Returns:
        ``(padded, lengths)``: L = max L_i; lengths an int64 array (N,) on
        the host, ready for ``RNN/LSTM/GRU(..., lengths=lengths)``; the
        padding mask for attention is ``np.arange(L) >= lengths[:, None]``.
    """
    seqs = list(sequences)
    if not seqs:
        raise ValueError("pad_sequence: expected at least one sequence")
    if padding_side not in ("right", "left"):
        raise ValueError(f"pad_sequence: expected padding_side 'right' or 'left', received {padding_side!r}")
    first = seqs[0]
    for i, s in enumerate(seqs):
        if not backend.is_array(s) or s.ndim < 1:
            raise TypeError(f"pad_sequence: expected arrays of at least one dimension, sequence {i} is "
                            f"{type(s).__name__}{'' if not backend.is_array(s) else f' of shape {s.shape}'}")
        if s.shape[1:] != first.shape[1:] or s.dtype != first.dtype or backend.device_of(s) != backend.device_of(first):
            raise ValueError(f"pad_sequence: expected every sequence as sequence 0, shape (L, {', '.join(map(str, first.shape[1:]))}) "
                             f"of {first.dtype} on {backend.device_of(first)}; sequence {i} has shape {tuple(s.shape)} "
                             f"of {s.dtype} on {backend.device_of(s)}")
    xp = backend.get_array_module(first)
    lengths = np.array([s.shape[0] for s in seqs], dtype=np.int64)
    longest = int(lengths.max())
    out = xp.full((len(seqs), longest) + tuple(first.shape[1:]), padding_value, dtype=first.dtype)
    for i, s in enumerate(seqs):
        if padding_side == "right":
            out[i, :s.shape[0]] = s
        else:
            out[i, longest - s.shape[0]:] = s
    return (out if batch_first else xp.swapaxes(out, 0, 1)), lengths
