"""Evaluation: task metrics and benchmark submission files."""
