"""Binary codes: packing bit planes, and scoring codes with popcounts.

A code is u bit planes of m bits (stored packed, m/8 bytes each) plus u scales a_k. Three scorers:
- symmetric (SDC): the inner product of two reconstructions, sum_{k,l} a_k a_l (m - 2 popcount(q_k XOR d_l));
- asymmetric: a float query vector against the document's reconstruction sum_l a_l (2 d_l - 1);
- hamming: the plain Hamming distance between the concatenated planes (negated, so higher is better).
"""

from __future__ import annotations

import numpy as np
import torch

from braid.indexer.recurrent_binarizer import RecurrentBinarizer


def pack_planes(planes: np.ndarray) -> np.ndarray:
    """(n, u, m) of +-1 (or booleans, True = +1) -> (n, u, m/8) uint8, most significant bit first."""
    return np.packbits(np.asarray(planes) > 0, axis=-1)


def unpack_planes(codes: np.ndarray, width: int) -> np.ndarray:
    """(n, u, m/8) uint8 -> (n, u, m) float32 of +-1."""
    return np.unpackbits(codes, axis=-1, count=width).astype(np.float32) * 2.0 - 1.0


def symmetric_scores(query: np.ndarray, codes: np.ndarray, scales: np.ndarray, width: int) -> np.ndarray:
    """SDC of one query code (u, B) against documents (n, u, B)."""
    scores = np.zeros(codes.shape[0], dtype=np.float64)
    for k in range(query.shape[0]):
        for plane in range(codes.shape[1]):
            hamming = np.bitwise_count(np.bitwise_xor(codes[:, plane, :], query[k])).sum(axis=1, dtype=np.int64)
            scores += scales[k] * scales[plane] * (width - 2.0 * hamming)
    return scores


def asymmetric_scores(query: np.ndarray, codes: np.ndarray, scales: np.ndarray, width: int) -> np.ndarray:
    """Float query (m,) against the documents' reconstructions from codes (n, u, B)."""
    reconstruction = np.einsum("u,nuw->nw", scales.astype(np.float32), unpack_planes(codes, width))
    return reconstruction @ query.astype(np.float32)


def hamming_scores(query: np.ndarray, codes: np.ndarray) -> np.ndarray:
    flat = codes.reshape(codes.shape[0], -1)
    return -np.bitwise_count(np.bitwise_xor(flat, query.reshape(-1))).sum(axis=1, dtype=np.int64).astype(np.float64)


class SignCoder:
    """The baseline: one plane, b = sign(x), at the embedding's own width."""

    method = "sign"

    def __init__(self, dim: int) -> None:
        if dim % 8:
            raise ValueError(f"sign codes need a width that is a multiple of 8, got {dim}")
        self.width = dim
        self.scales = np.array([1.0 / np.sqrt(dim)])

    def encode(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(embeddings, dtype=np.float32)
        return pack_planes(x[:, None, :] >= 0), x


class RecurrentCoder:
    """Codes from a trained :class:`RecurrentBinarizer`."""

    method = "recurrent"

    def __init__(self, model: RecurrentBinarizer) -> None:
        self.model = model
        self.width = model.config.width
        self.scales = model.scales.detach().numpy().astype(np.float64)

    @torch.inference_mode()
    def encode(self, embeddings: np.ndarray, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Packed planes (n, u, m/8) and the float projections t (n, m) used by asymmetric scoring."""
        codes, projections = [], []
        data = np.asarray(embeddings, dtype=np.float32)
        for start in range(0, len(data), batch_size):
            target, _, planes = self.model(torch.from_numpy(data[start : start + batch_size]))
            codes.append(pack_planes(planes.numpy()))
            projections.append(target.numpy())
        width_bytes = self.width // 8
        if not codes:
            return np.zeros((0, self.model.config.bits, width_bytes), np.uint8), np.zeros((0, self.width), np.float32)
        return np.concatenate(codes), np.concatenate(projections)
