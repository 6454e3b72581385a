"""Find a bundled preset by name, or a user's file by path: one resolver for model and device presets."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from workloads.errors import InputError, did_you_mean, nearest_file, read_user_text

PRESET_FOLDER = "presets"


def bundled_names(package: str, suffix: str) -> list[str]:
    """Names of the presets shipped in `package`/presets with this file suffix."""
    folder = resources.files(package) / PRESET_FOLDER
    return sorted(p.name[: -len(suffix)] for p in folder.iterdir() if p.name.endswith(suffix))


def read_preset(name_or_path: str, *, package: str, suffixes: tuple[str, ...], key: str,
                file_kind: str) -> tuple[str, str, str]:
    """(text, where, name) of a preset given by name, or of a file given by a path ending in one of suffixes.

    `key` and `file_kind` name the input in messages ("device", "device YAML").
    """
    path = Path(name_or_path)
    if name_or_path.endswith(suffixes) or path.exists():
        if not path.is_file():
            raise InputError(f"{name_or_path}: no such {file_kind} file{nearest_file(path)}")
        return read_user_text(path), str(path), path.stem
    names = bundled_names(package, suffixes[0])
    if name_or_path not in names:
        raise InputError(f"{key}: found {name_or_path!r}{did_you_mean(name_or_path, names)}, allowed: a path to "
                         f"a {file_kind} or one of {', '.join(names)}")
    text = (resources.files(package) / PRESET_FOLDER / f"{name_or_path}{suffixes[0]}").read_text()
    return text, bundled_where(package, name_or_path + suffixes[0]), name_or_path


def bundled_where(package: str, filename: str) -> str:
    """How messages name a bundled preset file; a user's file is named by its own path."""
    return f"{package}/{PRESET_FOLDER}/{filename}"
