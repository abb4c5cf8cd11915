"""Rank estimation by empirical variational Bayesian matrix factorization (EVBMF).

Written from Nakajima, Sugiyama, Babacan and Tomioka, "Global analytic solution of
fully-observed variational Bayesian matrix factorization", JMLR 14 (2013), because no library
on PyPI that this project may depend on provides it. For an L x M matrix V (L <= M, transpose
otherwise) with singular values gamma_1 >= ... >= gamma_L, alpha = L / M, and noise variance
sigma^2, the EVB solution keeps component h iff gamma_h > gamma_EVB = sigma sqrt(M x_),
where x_ = (1 + tau_)(1 + alpha / tau_) and tau_ is the positive zero of

    Psi1(tau) = log(tau + 1) + alpha log(tau / alpha + 1) - tau      (tau_ > sqrt(alpha))

(the paper's approximation is tau_ ~ 2.5129 sqrt(alpha); we solve for it). A kept component is
shrunk to

    gamma_h / 2 * (1 - (L + M) sigma^2 / gamma_h^2
                   + sqrt((1 - (L + M) sigma^2 / gamma_h^2)^2 - 4 L M sigma^4 / gamma_h^4)).

With sigma^2 unknown (the empirical case) it minimizes the free energy over sigma^2; with
x_h = gamma_h^2 / (M sigma^2) that is, up to constants,

    Omega(sigma^2) = sum_h psi0(x_h) + sum_{h: x_h > x_} psi1(x_h),
    psi0(x) = x - log x,  psi1(x) = Psi1(tau(x)),
    tau(x) = (x - (1 + alpha) + sqrt((x - (1 + alpha))^2 - 4 alpha)) / 2,

over the interval the paper bounds sigma^2 to: from max(gamma_{H+1}^2 / (M x_),
mean_{h > H} gamma_h^2 / M) with H = ceil(L / (1 + alpha)) - 1, to sum_h gamma_h^2 / (L M).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize

__all__ = ["EVBMFResult", "evbmf", "evbmf_rank", "tucker2_ranks"]


@dataclass(frozen=True)
class EVBMFResult:
    """Estimated rank, noise variance, the EVB threshold and the shrunk singular values."""
    rank: int
    sigma2: float
    threshold: float
    singular_values: np.ndarray      # of the input, descending
    estimates: np.ndarray            # EVB estimates (zero beyond the rank)


def _tau_lower(alpha: float) -> float:
    def psi1(t):
        return np.log(t + 1.0) + alpha * np.log(t / alpha + 1.0) - t
    lo, hi = np.sqrt(alpha), 10.0 * (1.0 + np.sqrt(alpha))
    while psi1(hi) > 0:
        hi *= 2.0
    return float(optimize.brentq(psi1, lo, hi))


def _tau(x: np.ndarray, alpha: float) -> np.ndarray:
    b = x - (1.0 + alpha)
    return 0.5 * (b + np.sqrt(np.maximum(b * b - 4.0 * alpha, 0.0)))


def _free_energy(sigma2: float, s2: np.ndarray, M: int, alpha: float, x_low: float) -> float:
    x = s2 / (M * sigma2)
    x = np.maximum(x, 1e-300)
    energy = np.sum(x - np.log(x))
    big = x[x > x_low]
    if big.size:
        t = _tau(big, alpha)
        energy += np.sum(np.log(t + 1.0) + alpha * np.log(t / alpha + 1.0) - t)
    return float(energy)


def evbmf(matrix: np.ndarray, sigma2: float | None = None) -> EVBMFResult:
    """EVBMF of a fully observed matrix: rank, noise variance (estimated unless given)."""
    V = np.asarray(matrix, dtype=np.float64)
    if V.ndim != 2 or min(V.shape) < 1:
        raise ValueError(f"evbmf needs a non-empty 2-D matrix, got shape {V.shape}")
    if V.shape[0] > V.shape[1]:
        V = V.T
    L, M = V.shape
    alpha = L / M
    s = np.linalg.svd(V, compute_uv=False)
    s2 = s ** 2
    tau_low = _tau_lower(alpha)
    x_low = (1.0 + tau_low) * (1.0 + alpha / tau_low)
    if sigma2 is None:
        H = int(np.ceil(L / (1.0 + alpha))) - 1          # upper bound of the EVB rank
        H = min(max(H, 0), L - 1)
        upper = float(np.sum(s2)) / (L * M)
        lower = max(s2[H] / (M * x_low), float(np.mean(s2[H:])) / M)
        if not np.isfinite(upper) or upper <= 0:
            return EVBMFResult(0, 0.0, 0.0, s, np.zeros_like(s))
        lower = min(lower, upper)
        if upper - lower <= 1e-12 * upper:
            sigma2 = upper
        else:
            res = optimize.minimize_scalar(_free_energy, bounds=(lower, upper), method="bounded",
                                           args=(s2, M, alpha, x_low),
                                           options={"xatol": 1e-10 * upper})
            sigma2 = float(res.x)
    threshold = float(np.sqrt(M * sigma2 * x_low))
    rank = int(np.sum(s > threshold))
    est = np.zeros_like(s)
    if rank:
        g2 = s2[:rank]
        a = 1.0 - (L + M) * sigma2 / g2
        est[:rank] = s[:rank] / 2.0 * (a + np.sqrt(np.maximum(a * a - 4.0 * L * M * sigma2 ** 2 / g2 ** 2, 0.0)))
    return EVBMFResult(rank=rank, sigma2=float(sigma2), threshold=threshold, singular_values=s,
                       estimates=est)


def evbmf_rank(matrix: np.ndarray) -> int:
    """The rank EVBMF estimates for ``matrix`` (at least 1)."""
    return max(1, evbmf(matrix).rank)


def tucker2_ranks(kernel: np.ndarray) -> tuple[int, int]:
    """Tucker-2 ranks (input channels, output channels) of a Conv2D kernel (kh, kw, cin, cout),
    estimated by EVBMF on the mode-cin and mode-cout unfoldings."""
    k = np.asarray(kernel)
    if k.ndim != 4:
        raise ValueError(f"tucker2_ranks needs a (kh, kw, cin, cout) kernel, got shape {k.shape}")
    cin, cout = k.shape[2], k.shape[3]
    unfold_in = np.moveaxis(k, 2, 0).reshape(cin, -1)
    unfold_out = np.moveaxis(k, 3, 0).reshape(cout, -1)
    return evbmf_rank(unfold_in), evbmf_rank(unfold_out)
