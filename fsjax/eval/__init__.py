"""Evaluation of swaps: the synthetic pairs protocol."""
