"""Adapters that record a framework's training loop into a deepscope run.

Each adapter is a module of its own that imports its framework when it is imported; this package imports
nothing, so ``import deepscope`` never loads Lightning or Transformers.

>>> from deepscope.capture.integrations.lightning import DeepscopeCallback      # pip install 'deepscope[lightning]'
>>> from deepscope.capture.integrations.huggingface import DeepscopeCallback    # pip install 'deepscope[huggingface]'
"""

__all__: list[str] = []
