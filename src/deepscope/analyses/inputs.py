"""What a model reads, told from its batches — images, tokens (integer ids) or a table's features — and the small
previews deepscope stores of image inputs.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .batches import Batch

PREVIEW_SIDE = 64  # image previews: the longer side at most this many pixels
PREVIEW_KWARGS = ("pixel_values", "images", "image", "x")  # dict batches: where an image input is looked for

# Modules that read (B, T, F) sequences: a model with one reads its 3-d inputs as sequences, not grey images.
SEQUENCE_MODULES = (nn.RNNBase, nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer,
                    nn.Conv1d)  # fmt: skip


def reads_sequences(model: nn.Module) -> bool:
    """Whether ``model`` holds a module that reads sequences (:data:`SEQUENCE_MODULES`)."""
    return any(isinstance(m, SEQUENCE_MODULES) for m in model.modules())


def image_input(batch: Batch, sequences: bool = False, shape: tuple[int, ...] | None = None) -> torch.Tensor | None:
    """The batch's input when it looks like images: (B, C, H, W) with C of 1 or 3, or (B, H, W), of floats or bytes
    — unless ``sequences`` (the model reads sequences: a (B, T, F) input is one). ``shape``: the (C, H, W) or (H, W)
    that the user said each instance's numbers are (MNIST as rows of 784): the input reshaped to it, whatever its
    own shape; a ``ValueError`` when the numbers do not fill it.

    The first positional input, else a keyword input named like ``pixel_values``; sides of at least 4 pixels.
    """
    x = batch.args[0] if batch.args else next((batch.kwargs[k] for k in PREVIEW_KWARGS if k in batch.kwargs), None)
    if not isinstance(x, torch.Tensor) or not (x.is_floating_point() or x.dtype == torch.uint8):
        if shape is not None:
            got = f"{type(x).__name__} of {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"deepscope.analyze: image_shape={shape} was given, but the inputs are no tensor of "
                             f"floats or bytes ({got})")  # fmt: skip
        return None
    if shape is not None:
        per_instance = x[0].numel() if len(x) else math.prod(shape)
        if per_instance != math.prod(shape):
            raise ValueError(f"deepscope.analyze: image_shape={shape} holds {math.prod(shape)} numbers, but each "
                             f"input holds {per_instance} (shape {tuple(x.shape[1:])})")  # fmt: skip
        return x.reshape(len(x), *((1, *shape) if len(shape) == 2 else shape))  # (B, ...) -> (B, C, H, W)
    if x.ndim == 4 and x.shape[1] in (1, 3) and min(x.shape[2:]) >= 4:
        return x
    if x.ndim == 3 and min(x.shape[1:]) >= 4 and not sequences:
        return x[:, None]  # (B, H, W) -> (B, 1, H, W)
    return None


MAX_STORED_FEATURES = 64  # a table's inputs up to this many numbers an instance are stored (wider: an embedding)


def feature_input(batch: Batch) -> torch.Tensor | None:
    """The batch's input when it is a row of numbers per instance (a table's features): the first positional input,
    (B, F) floating with F ≤ ``MAX_STORED_FEATURES``; else None."""
    x = batch.args[0] if batch.args else None
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.ndim == 2 and 0 < x.shape[1] <= MAX_STORED_FEATURES:
        return x
    return None


def input_kind(batch: Batch, sequences: bool = False, shape: tuple[int, ...] | None = None) -> str:
    """What the model reads: ``"images"`` (see :func:`image_input`), ``"tokens"`` (integer ids: text) or
    ``"features"`` (numbers of a table, an embedding, a sequence…)."""
    if image_input(batch, sequences, shape) is not None:
        return "images"
    x = batch.args[0] if batch.args else batch.kwargs.get("input_ids", next(iter(batch.kwargs.values()), None))
    if isinstance(x, torch.Tensor) and not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool:
        return "tokens"
    return "features"


def checked_image_shape(shape: Any) -> tuple[int, ...] | None:
    """``image_shape`` as a tuple: (C, H, W) with C of 1 or 3, or (H, W) — sides of at least 1; None for none."""
    if shape is None:
        return None
    try:
        dims = tuple(int(d) for d in shape)
        whole = all(int(d) == d for d in shape)
    except (TypeError, ValueError):
        dims, whole = (), False
    if not whole or len(dims) not in (2, 3) or min(dims) < 1 or (len(dims) == 3 and dims[0] not in (1, 3)):
        raise ValueError(f"deepscope.analyze: image_shape is (channels, height, width) with 1 or 3 channels, or "
                         f"(height, width), not {shape!r}")  # fmt: skip
    return dims


def preview_size(height: int, width: int, side: int = PREVIEW_SIDE) -> tuple[int, int]:
    """The preview's (h, w): the image scaled down so that its longer side is at most ``side``."""
    scale = min(1.0, side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def preview(x: torch.Tensor, size: tuple[int, int], channels: int) -> torch.Tensor:
    """Images (B, C, H, W) as small uint8 previews (B, h, w, channels): area-downscaled to ``size``, then each
    instance min–max scaled to 0…255 on its own (a constant image is black).

    >>> preview(torch.randn(2, 3, 224, 224), (64, 64), 3).shape
    torch.Size([2, 64, 64, 3])
    """
    x = x.detach().float().nan_to_num()
    if tuple(x.shape[2:]) != size:
        x = torch.nn.functional.interpolate(x, size=size, mode="area")  # (B, C, H, W) -> (B, C, h, w)
    if x.shape[1] != channels:  # a later batch in the other mode: grey <-> colour
        x = x.expand(-1, channels, -1, -1) if x.shape[1] == 1 else x.mean(1, keepdim=True)
    lo = x.amin((1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    span = x.amax((1, 2, 3), keepdim=True) - lo
    x = (x - lo) / torch.where(span > 0, span, torch.ones_like(span))
    return (x * 255).round_().to(torch.uint8).permute(0, 2, 3, 1)  # (B, C, h, w) -> (B, h, w, C)
