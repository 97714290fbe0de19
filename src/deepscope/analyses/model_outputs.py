"""Which of a model's outputs holds its class scores.

A model may return more than its logits — ``{"hidden": h, "out": logits}``, ``(features, logits)``, a Hugging Face
``ModelOutput`` with hidden states. ``output=`` names the entry: a dict key or a ``ModelOutput`` / named tuple field,
a tuple index, or a function of the whole output. Left out, a single tensor is the scores; of several, the one as
wide as the classes when only one is (or a binary classifier's one logit), else a ``logits`` entry, else the first
— and a warning names the entry taken, since a wrong guess turns every prediction and the accuracy into nonsense
without a word.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..notices import user_stacklevel
from .layer_outputs import first_tensor

OutputChoice = str | int | Callable[[Any], Any] | None
SHOWN = 8  # entries named in a message, at most


def checked_output_choice(output: Any) -> OutputChoice:
    """``output=`` as given, refused before any work unless a key, an index, a function or None."""
    if output is None or callable(output) or isinstance(output, str):
        return output
    if isinstance(output, int) and not isinstance(output, bool):
        return output
    raise TypeError(f"deepscope.analyze: output is a key of the model's dict output (output='logits'), an index of "
                    f"its tuple (output=1) or a function of it (output=lambda out: out.logits), not "
                    f"{output!r}")  # fmt: skip


def described_choice(output: OutputChoice) -> str | int | None:
    """``output=`` as stored in the analysis's config (JSON): a key or an index as given, a function by its
    qualified name."""
    if output is None or isinstance(output, (str, int)):
        return output
    return function_name(output)


def function_name(f: Callable[[Any], Any]) -> str:
    module, name = getattr(f, "__module__", None), getattr(f, "__qualname__", None) or type(f).__qualname__
    return f"{module}.{name}" if module and module != "builtins" else name


class Entry:
    """One of the model's outputs: its ``key`` (a dict key, a field's name or an index; None for the output itself),
    how the user names it (``output['out']``), its tensor, and how to take it from every batch's output."""

    def __init__(self, key: str | int | None, label: str, tensor: torch.Tensor, take: Callable[[Any], Any]) -> None:
        self.key, self.label, self.tensor, self.take = key, label, tensor, take

    def choice(self) -> str:
        """How ``output=`` picks this entry: ``output='out'``, ``output=1``."""
        return f"output={self.key!r}"


def entries(out: Any) -> list[Entry]:
    """The model's outputs that hold a tensor, in order: the output itself when a tensor, else the values of its
    dict (``ModelOutput``) or the items of its tuple."""
    if isinstance(out, torch.Tensor):
        return [Entry(None, "output", out, lambda o: o)]
    if isinstance(out, (tuple, list)) and hasattr(out, "_fields"):  # a named tuple: by field
        items = [(f, f"output.{f}", v, lambda o, f=f: getattr(o, f)) for f, v in zip(out._fields, out)]
    elif isinstance(out, (tuple, list)):
        items = [(i, f"output[{i}]", v, lambda o, i=i: o[i]) for i, v in enumerate(out)]
    elif isinstance(out, Mapping) or hasattr(out, "keys"):
        items = [(k, f"output[{k!r}]", out[k], lambda o, k=k: o[k]) for k in out.keys()]
    else:
        return []
    return [Entry(k, label, t, take) for k, label, v, take in items if (t := first_tensor(v)) is not None]


def kind_of(out: Any) -> str:
    """What the model returned, for a message: ``a dict of 'hidden', 'out'``, ``a tuple of 2 items``."""
    if isinstance(out, torch.Tensor):
        return "a single tensor"
    if isinstance(out, (tuple, list)) and hasattr(out, "_fields"):
        return f"a {type(out).__name__} of {shown(out._fields)}"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)} items (output[0] … output[{len(out) - 1}])"
    if isinstance(out, Mapping) or hasattr(out, "keys"):
        return f"a {type(out).__name__} of {shown(list(out.keys()))}"
    return f"a {type(out).__name__}"


def shown(keys: Any) -> str:
    keys = list(keys)
    text = ", ".join(repr(k) for k in keys[:SHOWN])
    return text + (", …" if len(keys) > SHOWN else "") if keys else "nothing"


def chosen_entry(out: Any, choice: str | int) -> Entry:
    """The entry ``output=`` names; a ``ValueError`` naming what the model returned when there is none."""
    found = [e for e in entries(out) if e.key == choice]
    if found:
        return found[0]
    if isinstance(choice, str) and not isinstance(out, torch.Tensor) and hasattr(out, choice):
        value = first_tensor(getattr(out, choice))  # an attribute of an output object (a dataclass)
        if value is not None:
            return Entry(choice, f"output.{choice}", value, lambda o: getattr(o, choice))
    if isinstance(choice, int) and isinstance(out, (tuple, list)) and -len(out) <= choice < 0:
        return chosen_entry(out, choice + len(out))
    if isinstance(choice, int) and hasattr(out, "to_tuple"):  # a ModelOutput indexed as a tuple, as it allows
        entry = chosen_entry(out.to_tuple(), choice)
        return Entry(entry.key, entry.label, entry.tensor, lambda o: o.to_tuple()[entry.key])
    raise ValueError(f"deepscope.analyze: output={choice!r} names none of the model's outputs holding a tensor: it "
                     f"returned {kind_of(out)}")  # fmt: skip


class ScoresOutput:
    """Takes the class scores out of each batch's output: the entry is decided at the first batch (and said there
    when the model returned several and none was chosen), then taken the same way from every batch.

    ``classes(labels)``: the number of classes, as the class names or the labels tell (None when unknown), given
    the first batch's labels."""

    def __init__(self, choice: OutputChoice, classes: Callable[[Any], int | None]) -> None:
        self.choice = choice
        self.classes = classes
        self.take: Callable[[Any], Any] | None = None  # from the whole output, the entry's value
        self.label: str | None = None  # how the user names the entry taken: output['out'], output[1], output
        self.several = False  # whether the model returned several outputs
        self.guessed: str | None = None  # why the entry was taken, when it was guessed among several (said once)

    def pick(self, out: Any, labels: Any) -> torch.Tensor | None:
        """The tensor of class scores in a batch's output (None when it holds no tensor)."""
        if self.take is None:
            return self._decide(out, labels)
        try:
            value = self.take(out)
        except (KeyError, IndexError, AttributeError, TypeError) as e:
            raise ValueError(f"deepscope.analyze: the model's outputs changed kind between batches: {self.label} "
                             f"was taken from the first, but this one returned {kind_of(out)}") from e  # fmt: skip
        return first_tensor(value)

    def _decide(self, out: Any, labels: Any) -> torch.Tensor | None:
        found = entries(out)
        self.several = len(found) > 1
        if callable(self.choice):
            return self._by_function(out)
        if self.choice is not None:
            entry = chosen_entry(out, self.choice)
        elif not found:
            return None
        else:
            entry = self._guess(found, self.classes(labels)) if self.several else found[0]
        self.label, self.take = entry.label, entry.take
        return entry.tensor

    def _by_function(self, out: Any) -> torch.Tensor:
        f = self.choice
        value = f(out)
        t = first_tensor(value)
        if t is None:
            raise ValueError(f"deepscope.analyze: output={function_name(f)} returned {type(value).__name__}, not a "
                             f"tensor of class scores (the model returned {kind_of(out)})")  # fmt: skip
        self.label, self.take = f"{function_name(f)}(output)", f
        return t

    def _guess(self, found: list[Entry], classes: int | None) -> Entry:
        """Of several outputs: the one as wide as the classes when only one is, else ``logits``, else the first.
        What was taken and how to choose is said by :meth:`warn_if_guessed` once the entry is stored as scores."""
        wide = [e for e in found if classes is not None and is_scores_shaped(e.tensor, classes)]
        single = [e for e in found if classes == 2 and is_one_logit(e.tensor)]  # a binary classifier's (BCE)
        logits = [e for e in found if e.key == "logits"]
        if len(wide) == 1:
            entry, why = wide[0], f"the only one {classes} wide, as many as the classes"
        elif not wide and len(single) == 1:
            entry, why = single[0], "the only single logit per instance, as of a binary classifier"
        elif logits:
            entry, why = logits[0], "its 'logits' entry"
        else:
            entry, why = found[0], "the first"
        others = " or ".join(e.choice() for e in found if e is not entry)
        self.guessed = (f"the model returned {len(found)} outputs ({', '.join(e.label for e in found)}); took "
                        f"{entry.label}, {why}, as the class scores. To take another, pass {others} (or "
                        f"{entry.choice()} to say this one is right, or scores='none' if none are class "
                        "scores)")  # fmt: skip
        return entry

    def warn_if_guessed(self) -> None:
        """One warning, at the user's call, naming the output taken as class scores among several when none was
        chosen: a wrong guess turns every prediction into nonsense (a 32-wide embedding read as 32 classes)."""
        if self.guessed is not None:
            message, self.guessed = self.guessed, None
            warnings.warn(f"deepscope.analyze: {message}", RuntimeWarning, stacklevel=user_stacklevel() + 1)


def is_scores_shaped(t: torch.Tensor, classes: int) -> bool:
    """A (B, classes) matrix of floats: what a classifier's logits look like."""
    return t.ndim == 2 and t.is_floating_point() and t.shape[1] == classes


def is_one_logit(t: torch.Tensor) -> bool:
    """One float per instance, ``(B,)`` or ``(B, 1)``: a binary classifier's logit."""
    return t.ndim in (1, 2) and t.is_floating_point() and t.numel() == len(t)
