"""Comparing a checkpoint's tensors with a model's, for the checkpoint loaders of foundation/ (SAM, CLIP):
one wording of what is missing, unexpected or mis-shaped, so every loader's error reads the same."""

from __future__ import annotations

import torch

KEYS_SHOWN = 3  # tensor names quoted per problem; the rest are counted


def first_keys(keys: list[str]) -> str:
    """The first few names, and how many more there are."""
    shown = ", ".join(keys[:KEYS_SHOWN])
    return shown + (f" (+{len(keys) - KEYS_SHOWN} more)" if len(keys) > KEYS_SHOWN else "")


def state_dict_problems(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> list[str]:
    """What keeps `state` from being exactly `expected` (names and shapes), one phrase per kind; [] if it is."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    return [
        f"{len(keys)} {what}: {first_keys(keys)}"
        for what, keys in (("missing tensors", missing), ("unexpected tensors", unexpected),
                           ("shape mismatches (file vs model)", mismatched))
        if keys
    ]
