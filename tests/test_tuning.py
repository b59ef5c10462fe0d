"""lamina.ops.tuning without a GPU: the candidate plans an autotuning call
times, and the switch (lamina.backend.autotune).  The timing itself and the
plans' results are checked on a GPU (or the emulated device) in
test_cuda_conv.py."""

import pytest

import lamina as lm
from lamina.ops import tuning
from lamina.ops.tuning import Plan


def test_autotune_switch_returns_the_previous_setting_and_checks_its_argument():
    before = lm.backend.autotune()
    try:
        assert lm.backend.autotune(True) is before
        assert lm.backend.autotune() is True
        assert lm.backend.autotune(False) is True
        with pytest.raises(TypeError, match="autotune: expected True, False or None, received 'yes'"):
            lm.backend.autotune("yes")
        assert lm.backend.autotune() is False
    finally:
        lm.backend.autotune(before)


def test_autotune_off_runs_the_rule_without_timing_or_asking_for_candidates():
    previous = lm.backend.autotune(False)
    try:
        rule = Plan(splits=3)
        got = tuning.choose("conv2d_forward", ("problem",), rule, lambda: pytest.fail("candidates asked for"),
                            lambda plan: pytest.fail("launcher asked for"))
        assert got is rule
    finally:
        lm.backend.autotune(previous)


def test_forward_candidates_resnet50_conv4_on_132_sms():
    """256 output channels over 6272 pixels, K = 2304: every SIMT build, each
    short of its slots, so each is tried with 2-8 splits as well."""
    plans = tuning.forward_candidates(256, 32 * 14 * 14, 2304, 1, 132, tensor=False)
    bases = {(p.rows, p.blocks) for p in plans}
    assert bases == {(32, 0), (64, 0), (128, 1), (128, 2)}
    for base in bases:
        assert sorted(p.splits for p in plans if (p.rows, p.blocks) == base) == [1, 2, 3, 4, 5, 6, 8]
    assert len(plans) == len(set(plans))


def test_forward_candidates_skip_splits_that_a_full_grid_or_a_short_reduction_does_not_need():
    # ResNet-20's 16-channel stage at batch 128: 1024 tiles of 32 rows fill 528 slots; K = 144
    assert tuning.forward_candidates(16, 128 * 32 * 32, 144, 1, 132, tensor=False) == [Plan(32, 0, 1)]
    # 64 channels, K = 576: 32- and 64-row tiles, splits while ranges stay >= 128 of the 576
    plans = tuning.forward_candidates(64, 128 * 8 * 8, 576, 1, 132, tensor=False)
    assert {p.rows for p in plans} == {32, 64}
    assert max(p.splits for p in plans) == 4
    # the tensor cores have one tile shape: only split counts
    plans = tuning.forward_candidates(256, 32 * 14 * 14, 2304, 1, 132, tensor=True)
    assert {(p.rows, p.blocks) for p in plans} == {(0, 0)} and len(plans) == 7


def test_backward_candidates():
    assert tuning.backward_data_candidates(16, tensor=False) == [Plan(32, 0, 1)]
    assert tuning.backward_data_candidates(256, tensor=False) == [Plan(32, 0, 1), Plan(64, 0, 1), Plan(128, 1, 1),
                                                                   Plan(128, 2, 1)]
    assert tuning.backward_data_candidates(256, tensor=True) == [Plan(0, 0, 1)]
    # ResNet-50 conv4's weight gradient: the rule's 7 splits, halves, doubles, powers of two; ranges >= 128 pixels
    plans = tuning.backward_weight_candidates(256, 6272, 1, 7, tensor=False)
    assert {p.rows for p in plans} == {32, 64, 128} and {p.blocks for p in plans} == {0}
    assert sorted({p.splits for p in plans}) == [1, 2, 3, 4, 5, 7, 8, 10, 14, 16, 32]
    # a tiny reduction cannot split
    assert tuning.backward_weight_candidates(8, 100, 1, 1, tensor=True) == [Plan(0, 0, 1)]
