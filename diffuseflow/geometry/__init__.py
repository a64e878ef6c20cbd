"""Diffraction geometry (pixel -> Miller index), symmetry and compiled per-pixel kernels."""
