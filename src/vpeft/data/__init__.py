"""Datasets for vpeft."""
