"""``python -m mmfuse``: the same command-line interface as the ``mmfuse`` console script."""

from mmfuse.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
