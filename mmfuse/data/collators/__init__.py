"""Collators: lists of raw samples → model batches (``classification``, ``jmasa``)."""
