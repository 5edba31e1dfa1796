"""Adversarial attacks on refusal."""
