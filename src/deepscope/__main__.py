"""``python -m deepscope``: the same commands as ``deepscope``."""

from deepscope.cli import main

if __name__ == "__main__":
    main()
