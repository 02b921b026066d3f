"""Conjugate gradient per image: the proximal map of any operator without a closed form."""

from __future__ import annotations

from collections.abc import Callable

import torch

Tensor = torch.Tensor

__all__ = ["conjugate_gradient"]


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-image inner product of (N, C, H, W) tensors -> (N, 1, 1, 1)."""
    return (a * b).sum(dim=(1, 2, 3), keepdim=True)


def conjugate_gradient(
    apply: Callable[[Tensor], Tensor],
    b: Tensor,
    x0: Tensor,
    *,
    tol: float = 1e-6,
    max_iter: int = 200,
) -> Tensor:
    """Solve ``apply(x) = b`` for a symmetric positive (semi-)definite ``apply``, per image.

    Each image of the (N, C, H, W) batch has its own step sizes; iteration stops when every
    residual norm is below ``tol * ||b||`` (or ``tol`` when ``b`` is zero). Starting from ``x0``
    on a singular but consistent system converges to the solution closest to ``x0``.
    """
    x = x0.clone()
    r = b - apply(x)
    p = r.clone()
    rs = _dot(r, r)
    threshold = (tol * _dot(b, b).sqrt()).clamp_min(tol) ** 2
    tiny = torch.finfo(b.dtype).tiny
    for _ in range(max_iter):
        if bool((rs <= threshold).all()):
            break
        ap = apply(p)
        alpha = torch.where(rs > threshold, rs / _dot(p, ap).clamp_min(tiny), 0.0)
        x.add_(alpha * p)
        r.sub_(alpha * ap)
        rs_new = _dot(r, r)
        beta = torch.where(rs > tiny, rs_new / rs.clamp_min(tiny), 0.0)
        p = r + beta * p
        rs = rs_new
    return x
