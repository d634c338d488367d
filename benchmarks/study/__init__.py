"""The course study: pairs of DETR-family models trained alike on the synthetic shapes set, and the
analyses of their runs (run.py is the entry point)."""
