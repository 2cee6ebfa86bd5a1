import time

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from growth.sampling import sample_without_replacement, topk_indices, uniform_without_replacement


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def draws(weights, k, reps, seed=0):
    g = gen(seed)
    w = torch.as_tensor(weights, dtype=torch.float64)
    return np.stack([sample_without_replacement(w, k, g).numpy() for _ in range(reps)])


# --- the law ---------------------------------------------------------------------------------

def test_first_draw_frequencies_proportional_to_weight():
    weights = [1.0, 2.0, 3.0, 4.0, 0.5, 9.5]
    reps = 20000
    first = draws(weights, 3, reps)[:, 0]
    observed = np.bincount(first, minlength=len(weights))
    p = np.array(weights) / sum(weights)
    assert chisquare(observed, p * reps).pvalue > 1e-3
    # The same counts clearly reject a uniform law, so the check above has power.
    assert chisquare(observed, np.full(len(weights), reps / len(weights))).pvalue < 1e-12
    np.testing.assert_allclose(observed / reps, p, atol=0.01)


def test_ordered_pairs_and_inclusion_for_k2_of_3_match_successive_sampling():
    # weights 1, 2, 3 (sum 6): P(first=i, second=j) = w_i/6 * w_j/(6 - w_i)
    pair_p = {(0, 1): 1 / 6 * 2 / 5, (0, 2): 1 / 6 * 3 / 5,
              (1, 0): 2 / 6 * 1 / 4, (1, 2): 2 / 6 * 3 / 4,
              (2, 0): 3 / 6 * 1 / 3, (2, 1): 3 / 6 * 2 / 3}
    # inclusion: P(i in sample) = p_i + sum_j p_j w_i / (6 - w_j), worked by hand
    inclusion = np.array([5 / 12, 11 / 15, 17 / 20])
    assert inclusion.sum() == pytest.approx(2.0)
    reps = 30000
    d = draws([1.0, 2.0, 3.0], 2, reps, seed=1)
    assert (d[:, 0] != d[:, 1]).all()
    pairs = list(pair_p)
    counts = np.array([np.sum((d[:, 0] == i) & (d[:, 1] == j)) for i, j in pairs])
    assert counts.sum() == reps
    assert chisquare(counts, np.array([pair_p[q] for q in pairs]) * reps).pvalue > 1e-3
    incl = np.array([(d == i).any(axis=1).mean() for i in range(3)])
    np.testing.assert_allclose(incl, inclusion, atol=0.01)
    # The naive law k * w_i / sum(w) differs by more than the tolerance, so the check has power.
    assert np.abs(incl - 2 * np.array([1, 2, 3]) / 6).max() > 0.1


def test_float32_weights_follow_the_same_law():
    w = torch.tensor([1.0, 3.0], dtype=torch.float32)
    g = gen(3)
    first = np.array([int(sample_without_replacement(w, 1, g)[0]) for _ in range(8000)])
    assert abs(first.mean() - 0.75) < 0.02


# --- structure -------------------------------------------------------------------------------

def test_distinct_indices_and_dtype():
    w = torch.rand(1000, generator=gen(5), dtype=torch.float64)
    idx = sample_without_replacement(w, 700, gen(6))
    assert idx.dtype == torch.long and idx.shape == (700,)
    assert idx.unique().numel() == 700
    assert int(idx.min()) >= 0 and int(idx.max()) < 1000


def test_zero_weights_never_drawn_while_positive_remain():
    w = torch.zeros(10000, dtype=torch.float64)
    positive = torch.tensor([3, 17, 500, 9999, 4242])
    w[positive] = torch.tensor([1e-300, 1.0, 1e300, 5e-324, 2.0], dtype=torch.float64)  # extremes stay > 0
    g = gen(7)
    for _ in range(20):
        idx = sample_without_replacement(w, 5, g)
        assert set(idx.tolist()) == set(positive.tolist())


def test_all_positive_entries_can_be_drawn_and_one_more_cannot():
    w = torch.tensor([0.0, 2.0, 0.0, 1.0])
    assert sorted(sample_without_replacement(w, 2, gen()).tolist()) == [1, 3]
    with pytest.raises(ValueError, match=r"k=3.*only 2 positive"):
        sample_without_replacement(w, 3, gen())


def test_k_zero_returns_empty_long():
    out = sample_without_replacement(torch.ones(4), 0, gen())
    assert out.dtype == torch.long and out.numel() == 0
    out = sample_without_replacement(torch.zeros(4), 0, gen())
    assert out.numel() == 0


@pytest.mark.parametrize("bad", [[1.0, -0.5, 2.0], [1.0, float("nan")], [1.0, float("inf")]])
def test_bad_weights_raise(bad):
    with pytest.raises(ValueError):
        sample_without_replacement(torch.tensor(bad, dtype=torch.float64), 1, gen())


def test_bad_k_and_shape_raise():
    w = torch.ones(5)
    with pytest.raises(ValueError, match="k must be >= 0"):
        sample_without_replacement(w, -1, gen())
    with pytest.raises(TypeError):
        sample_without_replacement(w, 1.5, gen())
    with pytest.raises(ValueError, match="1-D"):
        sample_without_replacement(torch.ones(2, 3), 1, gen())


def test_reproducible_with_same_seed_and_varies_with_seed():
    w = torch.rand(5000, generator=gen(11), dtype=torch.float64)
    a = sample_without_replacement(w, 100, gen(42))
    b = sample_without_replacement(w, 100, gen(42))
    c = sample_without_replacement(w, 100, gen(43))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_large_draw_is_fast():
    n, k = 5_000_000, 100_000
    w = torch.rand(n, generator=gen(12), dtype=torch.float64)
    w[: n // 2] = 0.0
    t0 = time.perf_counter()
    idx = sample_without_replacement(w, k, gen(13))
    elapsed = time.perf_counter() - t0
    assert idx.shape == (k,)
    assert int(idx.min()) >= n // 2  # zero-weight half never drawn
    assert idx.unique().numel() == k
    assert elapsed < 10.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda_with_cuda_generator():
    w = torch.rand(1_000_000, device="cuda", dtype=torch.float64)
    g = torch.Generator(device="cuda").manual_seed(0)
    idx = sample_without_replacement(w, 1000, g)
    assert idx.device.type == "cuda" and idx.unique().numel() == 1000
    # a CUDA generator does not serve CPU weights; a CPU generator serves any device, drawing
    # the same uniforms as on the CPU (so the same edges, but for a last-bit difference of log)
    with pytest.raises(ValueError, match="generator"):
        sample_without_replacement(w.cpu(), 10, g)
    on_cuda = sample_without_replacement(w, 1000, gen(4))
    assert on_cuda.device.type == "cuda"
    assert set(on_cuda.cpu().tolist()) == set(sample_without_replacement(w.cpu(), 1000, gen(4)).tolist())


# --- top-k and uniform -----------------------------------------------------------------------

def test_topk_descending_with_ties_by_lower_index():
    s = torch.tensor([1.0, 5.0, 3.0, 5.0, 3.0, 3.0, 0.0])
    assert topk_indices(s, 4).tolist() == [1, 3, 2, 4]
    assert topk_indices(s, 7).tolist() == [1, 3, 2, 4, 5, 0, 6]
    assert topk_indices(s, 0).numel() == 0


def test_topk_all_ties_large_is_deterministic():
    s = torch.zeros(100_000, dtype=torch.float64)
    assert torch.equal(topk_indices(s, 1000), torch.arange(1000))


def test_topk_validation():
    s = torch.tensor([1.0, 2.0])
    with pytest.raises(ValueError, match="k=3"):
        topk_indices(s, 3)
    with pytest.raises(ValueError):
        topk_indices(s, -1)
    with pytest.raises(ValueError):
        topk_indices(torch.tensor([1.0, float("nan")]), 1)


def test_uniform_without_replacement():
    idx = uniform_without_replacement(1000, 1000, gen(1), "cpu")
    assert sorted(idx.tolist()) == list(range(1000))
    a = uniform_without_replacement(50, 10, gen(2))
    assert torch.equal(a, uniform_without_replacement(50, 10, gen(2)))
    assert a.unique().numel() == 10 and a.dtype == torch.long
    g = gen(3)
    first = np.array([int(uniform_without_replacement(4, 2, g)[0]) for _ in range(8000)])
    assert chisquare(np.bincount(first, minlength=4)).pvalue > 1e-3
    assert uniform_without_replacement(5, 0, gen()).numel() == 0
    with pytest.raises(ValueError):
        uniform_without_replacement(3, 4, gen())
    with pytest.raises(ValueError):
        uniform_without_replacement(3, -1, gen())
