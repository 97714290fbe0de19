"""``python -m deepscope``: the same commands as ``deepscope``."""

from deepscope.cli import main

main()
