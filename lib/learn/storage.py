"""Loading stored networks and training checkpoints safely.

Every stored file of the book (``results/*/*.pt``, checkpoints of :func:`lib.learn.fit`) is
read with ``torch.load(weights_only=True)``: tensors, numbers, strings and containers only, no
code. A missing, empty, truncated or foreign file becomes one error that names the file and what
was expected (torch's own message would advise loading with ``weights_only=False``, i.e.
executing whatever the file contains; this module never does and never suggests it), and a
state dict is loaded with ``strict=True``, so wrong keys are an error rather than a silently
untrained network.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

__all__ = ["StoredFileError", "load_file", "load_state_dict_file"]


class StoredFileError(ValueError):
    """A stored file that is missing a part, truncated, empty or not what it should be."""


def load_file(path: str | os.PathLike, what: str = "a stored torch file"):
    """``torch.load(path, weights_only=True, map_location="cpu")`` with readable errors.

    Parameters
    ----------
    path : str or path-like
        The file.
    what : str
        What the file should contain, for the error message (e.g. ``"the weights of tista"``).

    Returns
    -------
    object
        The loaded object.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    StoredFileError
        If the file is empty, truncated, corrupted or holds objects other than tensors,
        numbers, strings and containers.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (expected {what})")
    if path.stat().st_size == 0:
        raise StoredFileError(f"{path} is empty (expected {what})")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except (
        RuntimeError,
        EOFError,
        KeyError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        OSError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
    ):
        raise StoredFileError(
            f"{path} could not be read as {what}: the file is truncated, corrupted or holds "
            "objects other than tensors and plain containers; re-create it with the script "
            "that produced it"
        ) from None


def load_state_dict_file(model: nn.Module, path: str | os.PathLike, *, what: str, dtype=None):
    """Load the state dict stored in ``path`` into ``model`` with ``strict=True``.

    Parameters
    ----------
    model : nn.Module
        Receives the weights (in place).
    path : str or path-like
        A file holding ``{name: tensor}`` as written by ``torch.save(model.state_dict())``
        (non-persistent buffers, such as a fixed sensing matrix, are not part of it).
    what : str
        Description for error messages.
    dtype : torch.dtype, optional
        Cast every floating tensor to this dtype before loading.

    Returns
    -------
    nn.Module
        ``model``.

    Raises
    ------
    StoredFileError
        If the file cannot be read, is not a dict of tensors, or its keys or shapes do not
        match ``model`` (the message lists the missing and unexpected keys).
    """
    sd = load_file(path, what)
    if not isinstance(sd, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()
    ):
        raise StoredFileError(f"{path} does not hold a state dict {{name: tensor}} ({what})")
    if dtype is not None:
        sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    want = set(model.state_dict())
    missing, unexpected = sorted(want - set(sd)), sorted(set(sd) - want)
    if missing or unexpected:
        raise StoredFileError(
            f"{path} does not fit {type(model).__name__} ({what}): "
            f"missing keys {missing}, unexpected keys {unexpected}"
        )
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:  # shape mismatch
        raise StoredFileError(f"{path} does not fit {type(model).__name__} ({what}): {e}") from None
    return model
