"""Algorithms of the workflow's steps, over the io and geometry layers."""
