"""Corpus adapters: each turns a public corpus on disk into the same Recording table."""

from dataset_adapters.base import (
    RECORDING_COLUMNS,
    Adapter,
    AdapterEntry,
    adapter_entry,
    available_adapters,
    get_adapter,
    register_adapter,
)

__all__ = ["RECORDING_COLUMNS", "Adapter", "AdapterEntry", "adapter_entry", "available_adapters", "get_adapter",
           "register_adapter"]
