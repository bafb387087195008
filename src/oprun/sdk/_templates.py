"""Reading Open Job Description job templates and Deadline Cloud job bundles from disk.

`read_template` takes what `actions.register_template()` is given (a template file,
a job bundle directory or an already parsed mapping) and returns the template as the
mapping to send. The document is parsed by openjd-model's own reader, as the server
parses template text; the server then validates it and answers a 400 that quotes the
model's error.

A job bundle is a directory holding ``template.yaml`` or ``template.json`` (exactly
one). Its other files (``parameter_values.*``, ``asset_references.*``, scripts) are
not sent. As ``deadline bundle submit`` does, a relative default of a ``PATH`` (or
``LIST[PATH]``) parameter is made absolute by joining it to the bundle directory,
so that a bundle's ``scripts`` directory is found wherever the job runs (the
directory must be reachable there: oprun does not copy files).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from oprun.domain.errors import ValidationError

BUNDLE_TEMPLATES = ("template.yaml", "template.json")
"""The file names of a job bundle's template, as the Deadline Cloud CLI looks for them."""

TemplateSource = str | os.PathLike[str] | Mapping[str, Any]
"""A template file, a job bundle directory, or a parsed template."""

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def read_template(source: TemplateSource) -> dict[str, Any]:
    """The job template in `source`, as a mapping ready to send.

    Args:
        source: a path (`str` or `os.PathLike`) to a YAML or JSON template file
            (``.json`` is read as JSON, anything else as YAML) or to a Deadline Cloud
            job bundle directory; or a mapping, which is taken as it is.

    Raises:
        ValidationError: nothing is at the path, a directory is not a job bundle
            (no ``template.yaml``/``template.json``, or both), a file cannot be read,
            or it is not a YAML/JSON mapping. The message names the file.
    """
    if isinstance(source, Mapping):
        return dict(source)
    if not isinstance(source, str | os.PathLike):
        raise ValidationError(
            "a job template must be a path to a template file or job bundle directory, "
            f"or a mapping, not {type(source).__name__}",
            field="template",
        )
    path = Path(source).expanduser()
    if _is(path, Path.is_dir):
        return read_bundle(path)
    if not _is(path, Path.is_file):
        hint = ""
        if isinstance(source, str) and "\n" in source:
            hint = " (template text goes in ActionDefinition(kind='openjd', template=...))"
        raise ValidationError(
            f"no template file or job bundle directory at {_shown(source)}{hint}",
            field="template",
        )
    return _parse(path)


def read_bundle(directory: Path) -> dict[str, Any]:
    """The template of a job bundle, its relative PATH defaults joined to the bundle.

    Raises:
        ValidationError: the directory has no template, or two, or it cannot be read.
    """
    found = [directory / name for name in BUNDLE_TEMPLATES if (directory / name).is_file()]
    if not found:
        raise ValidationError(
            f"{directory} is not a job bundle: it has no template.yaml or template.json",
            field="template",
        )
    if len(found) > 1:
        raise ValidationError(
            f"job bundle {directory} has both template.yaml and template.json; keep one",
            field="template",
        )
    return resolve_bundle_paths(_parse(found[0]), directory)


def resolve_bundle_paths(template: dict[str, Any], directory: Path) -> dict[str, Any]:
    """`template` with each relative PATH / LIST[PATH] default joined to `directory`.

    Empty defaults, absolute paths and URIs (``s3://...``) are kept; a joined path
    is normalised lexically (``.`` dropped, ``..`` applied), as OpenJD does.
    """
    definitions = template.get("parameterDefinitions")
    if not isinstance(definitions, list):
        return template
    base = os.path.abspath(directory)
    resolved = []
    for definition in definitions:
        if isinstance(definition, dict):
            kind = str(definition.get("type", "")).upper()
            default = definition.get("default")
            if kind == "PATH" and isinstance(default, str):
                definition = {**definition, "default": _join(base, default)}
            elif kind == "LIST[PATH]" and isinstance(default, list):
                joined = [_join(base, d) if isinstance(d, str) else d for d in default]
                definition = {**definition, "default": joined}
        resolved.append(definition)
    return {**template, "parameterDefinitions": resolved}


def _join(base: str, value: str) -> str:
    if not value or os.path.isabs(value) or _URI.match(value):
        return value
    return os.path.normpath(os.path.join(base, value))


def _parse(path: Path) -> dict[str, Any]:
    """A template file's mapping, read by openjd-model's reader (the server's)."""
    from openjd.model import DecodeValidationError, DocumentType, document_string_to_object

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"cannot read {path}: {exc}", field="template") from None
    kind = DocumentType.JSON if path.suffix.lower() == ".json" else DocumentType.YAML
    try:
        return document_string_to_object(document=text, document_type=kind)
    except DecodeValidationError as exc:
        raise ValidationError(f"{path}: {exc}", field="template") from None


def _is(path: Path, test: Callable[[Path], bool]) -> bool:
    """`test(path)`, False for a name no file can have (too long, a NUL byte)."""
    try:
        return test(path)
    except (OSError, ValueError):
        return False


def _shown(source: str | os.PathLike[str]) -> str:
    text = os.fspath(source)
    return repr(text if len(text) <= 80 else text[:77] + "...")
