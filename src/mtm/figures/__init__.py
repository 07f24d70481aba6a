"""Figures drawn from the workflow's outputs."""
