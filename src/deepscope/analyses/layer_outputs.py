"""A layer's output as one vector per instance: the tensor a module returned, padded back when nested, turned batch
first when the module's sequences are ``(T, B, D)``, then pooled — channel means of feature maps, a (masked) mean or
the last token of sequences.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

# Modules whose 3-d outputs are (B, C, L) with channels first; other 3-d outputs are sequences (B, T, D). Their
# documented input is (N, C, L) when 3-d: norms over channels, padding and resampling of the length, channel dropout,
# unfolded blocks (N, C × kernel, L).
CHANNELS_FIRST_1D = (nn.Conv1d, nn.ConvTranspose1d, nn.BatchNorm1d, nn.InstanceNorm1d, nn.MaxPool1d, nn.AvgPool1d,
                     nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d, nn.LazyBatchNorm1d, nn.LazyInstanceNorm1d,
                     nn.SyncBatchNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.LPPool1d, nn.MaxUnpool1d,
                     nn.ConstantPad1d, nn.ReflectionPad1d, nn.ReplicationPad1d, nn.CircularPad1d, nn.Dropout1d,
                     nn.FeatureAlphaDropout, nn.ChannelShuffle, nn.Upsample, nn.Unfold)  # fmt: skip


class ChannelsFirstOutputs:
    """Which layers' 3-d outputs are (B, C, L) though their modules do not say so, learnt in a forward pass: a
    ReLU, a Dropout or a block of them after a 1-d convolution (elementwise: ``Conv1d → ReLU`` is no sequence of C
    positions of L features). A tensor is channels first when a :data:`CHANNELS_FIRST_1D` module returned it, or a
    module returned it whose first input was one, in the same shape (an activation, a residual block); a container
    returning its last child's output returns the very tensor."""

    def __init__(self) -> None:
        # by id; an entry leaves with its tensor (whose id a new tensor may then take), none is kept alive
        self.tensors: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary()

    def note(self, module: nn.Module, inputs: Any, out: Any) -> None:
        """A forward hook for every module of the model."""
        t = first_tensor(out)
        if t is not None and t.ndim == 3 and self.is_channels_first(module, inputs, t):
            self.tensors[id(t)] = t

    def is_channels_first(self, module: nn.Module, inputs: Any, t: torch.Tensor) -> bool:
        if isinstance(module, CHANNELS_FIRST_1D) or id(t) in self.tensors:
            return True
        x = inputs[0] if isinstance(inputs, tuple) and inputs else None
        return isinstance(x, torch.Tensor) and id(x) in self.tensors and x.shape == t.shape


# torch's modules that declare no ``batch_first`` of their own but hold attention layers that do: theirs is their
# outputs' layout (a TransformerEncoderLayer(batch_first=False) returns (T, B, D), and so does its encoder).
HOLDS_ITS_LAYOUT = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.TransformerEncoder,
                    nn.TransformerDecoder)  # fmt: skip


def declared_batch_first(module: nn.Module) -> bool | None:
    """Whether a module says its sequences are batch first: its own ``batch_first`` (``MultiheadAttention``, RNNs,
    ``nn.Transformer``, or any module that sets the attribute), or for :data:`HOLDS_ITS_LAYOUT` the one their
    attention layers agree on; None when it says nothing."""
    own = getattr(module, "batch_first", None)
    if isinstance(own, bool):
        return own
    if isinstance(module, HOLDS_ITS_LAYOUT):
        inner = {m.batch_first for m in module.modules() if isinstance(getattr(m, "batch_first", None), bool)}
        return inner.pop() if len(inner) == 1 else None
    return None


def batch_second_modules(model: nn.Module) -> set[nn.Module]:
    """The modules whose sequence outputs are ``(T, B, …)``: those that declare ``batch_first=False``, and those inside
    one that does (the Linear, LayerNorm and Dropout layers of a ``TransformerEncoderLayer(batch_first=False)`` see
    its ``(T, B, D)`` sequences), unless they declare otherwise themselves."""
    out: set[nn.Module] = set()

    def walk(module: nn.Module, inherited: bool) -> None:
        declared = declared_batch_first(module)
        second = inherited if declared is None else not declared
        if second:
            out.add(module)
        for child in module.children():
            walk(child, second)

    walk(model, False)
    return out


def sequence_batch_dim(name: str, shape: tuple[int, ...], rows: int, batch_second: bool, known: int | None) -> int:
    """Where the instances of a sequence output ``(B, T, D)`` or ``(T, B, D)`` are: dim 0 or dim 1.

    The shape tells when only one of its first two sizes is the batch's ``rows``; when both are (``T == B``), the
    layer's layout once a batch told it (``known``), else the module's own (``batch_second``: it, or a module holding
    it, declares ``batch_first=False``). Instances along dim 1 of a module that declares nothing raise: they may be
    ``(T, B, D)`` or something else entirely, and a guess would store wrong rows without a word."""
    first, second = shape[0] == rows, shape[1] == rows
    if first and second:
        return known if known is not None else int(batch_second)
    if second and not batch_second:
        raise ValueError(f"deepscope.analyze: layer {name!r} outputs {tuple(shape)} for a batch of {rows}: its "
                         "instances are along dim 1, as in the (T, B, D) sequences of modules with "
                         "batch_first=False, but neither it nor a module holding it declares batch_first=False. "
                         "Build the model with batch_first=True, or set `batch_first = False` on the module whose "
                         "every sequence output is (T, B, …) — deepscope then pools them over dim 0 —, or record "
                         "other layers")  # fmt: skip
    return int(second)  # neither: the rows are counted (and refused) as they are


def is_feature_map(t: torch.Tensor, module: nn.Module) -> bool:
    """Feature maps: (B, C, H, W) outputs, and (B, C, L) outputs of 1-d convolutions, pooling and norms."""
    return t.ndim == 4 or (t.ndim == 3 and isinstance(module, CHANNELS_FIRST_1D))


def pool(x: torch.Tensor, mask: torch.Tensor | None, channels_first: bool, mode: str = "mean") -> torch.Tensor:
    """One vector per instance: channel means of feature maps, a (masked) mean or last token of sequences.

    >>> pool(torch.ones(8, 16, 7, 7), None, False).shape
    torch.Size([8, 16])
    """
    if x.ndim == 1:
        return x[:, None]  # (B,) -> (B, 1)
    if x.ndim == 2:
        return x
    if not (x.is_floating_point() or x.is_complex()):
        x = x.float()  # integer codes, a boolean mask: their means (torch takes no mean of them)
    if x.ndim >= 4 or channels_first:
        return x.flatten(2).mean(2)  # (B, C, H, W, ...) -> (B, C, H*W...) -> (B, C)
    # (B, T, D): a sequence
    if mask is not None and mask.shape == x.shape[:2]:
        real = mask != 0
        if mode == "last":
            t = torch.arange(x.shape[1], device=x.device)
            last = (t * real).argmax(1)  # index of the last real token, left or right padding alike
            return x[torch.arange(x.shape[0], device=x.device), last]  # (B, T, D) -> (B, D)
        # summed in float32, as torch's own means accumulate: a half-precision sum of many tokens overflows
        acc = torch.promote_types(x.dtype, torch.float32)
        m = real.to(acc).unsqueeze(-1)  # (B, T) -> (B, T, 1)
        mean = (x.to(acc) * m).sum(1) / m.sum(1).clamp(min=1)  # (B, T, D) -> (B, D)
        return mean.to(x.dtype)
    return x[:, -1] if mode == "last" else x.mean(1)


def padded(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``x`` as a regular tensor: a nested one (``nn.TransformerEncoder``'s fast path in eval mode drops the padding
    tokens) padded back with zeros to the batch's ``(B, T)`` mask, so that its rows line up with the mask."""
    if not x.is_nested:
        return x
    if mask is not None and mask.ndim == 2:
        return x.to_padded_tensor(0.0, output_size=(mask.shape[0], mask.shape[1], x.size(-1)))
    return x.to_padded_tensor(0.0)


def unpacked(out: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """An RNN's output over a ``PackedSequence`` (returned as such, or first of a tuple) as ``(B, T, H)`` in the
    batch's order, zeros past each sequence's end, and its ``(B, T)`` mask of real steps — a packed sequence's own
    padding mask. None for any other output. (Its ``data``, the steps of all sequences one after another, is no
    row per instance.)"""
    if isinstance(out, (tuple, list)) and not isinstance(out, PackedSequence) and out:
        out = out[0]
    if not isinstance(out, PackedSequence):
        return None
    x, lengths = pad_packed_sequence(out, batch_first=True)
    real = torch.arange(x.shape[1])[None, :] < lengths[:, None]
    return x, real.to(x.device)


def first_tensor(out: Any) -> torch.Tensor | None:
    """The tensor a module returned: itself, the first of a tuple, or ``logits`` / the first value of a dict."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return next((t for o in out if (t := first_tensor(o)) is not None), None)
    if isinstance(out, dict) or hasattr(out, "keys"):
        if "logits" in out:
            return first_tensor(out["logits"])
        return next((t for k in out.keys() if (t := first_tensor(out[k])) is not None), None)
    return None
