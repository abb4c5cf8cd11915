"""EVBMF rank estimation (Nakajima et al. 2013) on synthetic low-rank matrices with noise."""

import numpy as np
import pytest

from freeml_keras.compression import vbmf


def _low_rank(rng, L, M, rank, noise):
    signal = rng.normal(size=(L, rank)) @ rng.normal(size=(rank, M))
    return signal + noise * rng.normal(size=(L, M))


@pytest.mark.parametrize("L,M,rank,noise", [(40, 60, 5, 0.1), (60, 40, 8, 0.5),
                                            (100, 100, 10, 1.0), (30, 300, 3, 0.2)])
def test_recovers_rank_and_noise_variance(L, M, rank, noise):
    rng = np.random.default_rng(L * M + rank)
    res = vbmf.evbmf(_low_rank(rng, L, M, rank, noise))
    assert res.rank == rank
    assert res.sigma2 == pytest.approx(noise ** 2, rel=0.15)
    # Kept components are shrunk, never grown; the rest are zero.
    assert np.all(res.estimates[:rank] < res.singular_values[:rank])
    assert np.all(res.estimates[rank:] == 0)
    assert res.singular_values[rank - 1] > res.threshold > res.singular_values[rank]


def test_pure_noise_has_rank_zero():
    rng = np.random.default_rng(1)
    assert vbmf.evbmf(rng.normal(size=(50, 70))).rank == 0
    assert vbmf.evbmf_rank(rng.normal(size=(50, 70))) == 1  # callers get at least 1


def test_known_noise_variance_gives_the_same_rank():
    rng = np.random.default_rng(2)
    V = _low_rank(rng, 30, 50, 4, 0.3)
    assert vbmf.evbmf(V, sigma2=0.09).rank == 4


def test_tucker2_ranks_of_a_low_rank_kernel():
    rng = np.random.default_rng(3)
    core = rng.normal(size=(3, 3, 6, 9))
    u_in, u_out = rng.normal(size=(32, 6)), rng.normal(size=(48, 9))
    k = np.einsum("hwrs,ir,os->hwio", core, u_in, u_out) + 0.01 * rng.normal(size=(3, 3, 32, 48))
    assert vbmf.tucker2_ranks(k) == (6, 9)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        vbmf.evbmf(np.zeros(5))
    with pytest.raises(ValueError, match="kernel"):
        vbmf.tucker2_ranks(np.zeros((3, 3, 4)))
