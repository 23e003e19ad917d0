"""Sparse autoencoders: one model class (TopK, BatchTopK, ReLU, JumpReLU), formats, evaluation, training."""

from clinical_transfer.sae.model import SAEConfig, SparseAutoencoder, SparseCodes

__all__ = ["SAEConfig", "SparseAutoencoder", "SparseCodes"]
