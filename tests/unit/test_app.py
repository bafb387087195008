"""`App`: the action decorator, inferred parameter specs and entrypoints."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pydantic
import pytest

from oprun.app import App, entrypoint_of, load_app
from oprun.context import Context
from oprun.domain.models import ActionKind, Requirements, RetryPolicy
from oprun.domain.params import ParameterSpec

app = App("media")


@app.action(name="resize", timeout=600, queue="gpu", max_attempts=5, cacheable=True)
def resize(ctx: Context, width: int, height: int = 480, out: Path = Path("out")) -> dict:
    """Resize images.

    More words.
    """
    return {"width": width, "height": height}


@app.action
def thumbnail(ctx, size: float = 0.5, tags: list[str] | None = None, dry: bool = False):
    return size


def test_decorator_returns_the_function_unchanged():
    assert resize(None, 2) == {"width": 2, "height": 480}
    assert thumbnail.__name__ == "thumbnail"
    assert thumbnail(None) == 0.5


def test_definition_records_settings_entrypoint_and_docstring():
    d = app.get("resize")
    assert d.kind is ActionKind.PYTHON
    assert d.entrypoint == f"{__name__}:resize"
    assert (d.timeout, d.queue, d.max_attempts, d.cacheable) == (600, "gpu", 5, True)
    assert d.description == "Resize images.\n\nMore words."


def test_parameter_specs_are_inferred_from_the_signature():
    assert app.get("resize").parameters == [
        ParameterSpec(name="width", type="int", required=True),
        ParameterSpec(name="height", type="int", required=False, default=480),
        ParameterSpec(name="out", type="path", required=False, default="out"),
    ]
    kinds = {p.name: (p.type, p.required, p.default) for p in app.get("thumbnail").parameters}
    assert kinds == {
        "size": ("float", False, 0.5),
        "tags": ("json", False, None),
        "dry": ("bool", False, False),
    }


def test_defaults_without_arguments():
    d = app.get("thumbnail")
    assert d.name == "thumbnail"
    assert (d.timeout, d.queue, d.max_attempts, d.cacheable, d.description) == (
        None,
        "default",
        3,
        False,
        "",
    )


def test_definitions_keep_their_order_and_get_names_the_known_ones():
    assert [d.name for d in app.definitions()] == ["resize", "thumbnail", "transcode"]
    assert "resize" in app and len(app) == 3
    with pytest.raises(KeyError, match="resize, thumbnail"):
        app.get("nope")


def test_duplicate_name_is_refused():
    other = App("dup")
    other.action(name="a")(resize)
    with pytest.raises(ValueError, match="already has an action 'a'"):
        other.action(name="a")(thumbnail)


def test_nested_functions_and_functions_without_context_are_refused():
    other = App("bad")

    def local(ctx):
        return None

    with pytest.raises(TypeError, match="module level"):
        other.action(local)
    with pytest.raises(TypeError, match="context as its first argument"):
        entrypoint_of(noctx)


def noctx():
    return None


def test_invalid_settings_are_refused_by_the_model():
    with pytest.raises(pydantic.ValidationError):
        App("x").action(name="bad name!")(resize)
    with pytest.raises(pydantic.ValidationError):
        App("x").action(max_attempts=0)(resize)


def test_load_app_by_attribute_or_by_module():
    assert load_app(f"{__name__}:app") is app
    assert load_app(__name__) is app
    with pytest.raises(LookupError):
        load_app(f"{__name__}:missing")
    with pytest.raises(TypeError):
        load_app(f"{__name__}:resize")


def test_load_app_imports_from_the_current_directory_as_python_m_does(tmp_path, monkeypatch):
    (tmp_path / "cwd_media_app.py").write_text("from oprun import App\n\napp = App('cwd')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "cwd_media_app", raising=False)
    try:
        assert load_app("cwd_media_app:app").name == "cwd"
        assert sys.path[0] == str(tmp_path)  # where worker children import it from too
    finally:
        sys.modules.pop("cwd_media_app", None)
    with pytest.raises(ImportError, match="cannot import 'no_such_module_here'"):
        load_app("no_such_module_here:app")


def test_examples_app_has_the_tour_actions():
    from oprun.examples import app as examples

    assert [d.name for d in examples.definitions()] == ["sleep", "echo", "fail", "noop"]
    assert examples.get("noop").entrypoint == "oprun.examples:noop"


def test_importing_app_pulls_in_no_server_or_http_client(tmp_path):
    # The package's __init__ re-exports the SDK; load `oprun.app` on its own to check its imports.
    src = Path(__file__).resolve().parents[2] / "src" / "oprun"
    code = textwrap.dedent(
        f"""
        import sys, types
        pkg = types.ModuleType("oprun")
        pkg.__path__ = [{str(src)!r}]
        sys.modules["oprun"] = pkg
        import oprun.app, oprun.context
        heavy = sorted(m for m in ("httpx", "fastapi", "sqlalchemy", "uvicorn") if m in sys.modules)
        print(",".join(heavy))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_script_main_module_is_named_by_its_file(tmp_path):
    script = tmp_path / "myactions.py"
    script.write_text(
        textwrap.dedent(
            """
            from oprun.app import App
            app = App("s")
            @app.action
            def go(ctx):
                pass
            print(app.get("go").entrypoint)
            """
        )
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "myactions:go"


@app.action(
    retry=RetryPolicy(retry_on=["EXCEPTION"], backoff_seconds=2),
    requirements=Requirements(gpus=1, tags=["cuda"]),
    quarantine_after=0,
)
def transcode(ctx: Context, clip: str) -> str:
    return clip


def test_retry_requirements_and_quarantine_reach_the_definition():
    definition = app.get("transcode")
    assert definition.retry.retries("EXCEPTION") and not definition.retry.retries("X")
    assert definition.retry.backoff_seconds == 2
    assert definition.requirements.satisfied_by({"gpus": 2, "tags": ["cuda", "ssd"]})
    assert not definition.requirements.satisfied_by({"gpus": 2})
    assert definition.quarantine_after == 0
    assert resize_definition_defaults().retry.retry_on == ["CRASHED"]


def resize_definition_defaults():
    return app.get("resize")
