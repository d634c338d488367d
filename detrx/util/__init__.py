"""Small utilities at the bottom of the import graph (no detrx imports)."""
