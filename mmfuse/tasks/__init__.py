"""Training tasks (``classification``, ``jmasa``): what the trainer and CLI need to know about a task."""
