"""Reading job templates and Deadline Cloud job bundles for `actions.register_template()`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from oprun.domain.errors import ValidationError
from oprun.sdk import _endpoints as E
from oprun.sdk._templates import read_template

from ._sdk_stub import Stub, action_json, body, ok

TEMPLATE = """\
specificationVersion: 'jobtemplate-2023-09'
name: frames
parameterDefinitions:
- {name: Frames, type: STRING, default: "1-10"}
- {name: ScriptDir, type: PATH, objectType: DIRECTORY, dataFlow: IN, default: scripts}
- {name: OutputDir, type: PATH, objectType: DIRECTORY, dataFlow: OUT, default: ./out/../output}
- {name: Optional, type: PATH, default: ""}
- {name: Absolute, type: PATH, default: /srv/shared}
- {name: Scene, type: PATH}
steps:
- name: Render
  script:
    actions:
      onRun: {command: bash, args: ['{{Param.ScriptDir}}/render.sh', '{{Param.Frames}}']}
"""


def _defaults(template: dict) -> dict[str, object]:
    return {p["name"]: p.get("default") for p in template["parameterDefinitions"]}


def _bundle(tmp_path: Path, name: str = "template.yaml", text: str = TEMPLATE) -> Path:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / name).write_text(text)
    return bundle


# -- template files ----------------------------------------------------------------------
def test_a_yaml_template_file_is_read_as_written(tmp_path: Path) -> None:
    path = tmp_path / "frames.yaml"
    path.write_text(TEMPLATE)
    template = read_template(path)
    assert template["name"] == "frames"
    assert template["steps"][0]["name"] == "Render"
    # Outside a bundle, relative PATH defaults are left as written.
    assert _defaults(template)["ScriptDir"] == "scripts"
    assert read_template(str(path)) == template


def test_a_json_template_file_is_read_as_json(tmp_path: Path) -> None:
    path = tmp_path / "frames.json"
    document = {"specificationVersion": "jobtemplate-2023-09", "name": "j", "steps": []}
    path.write_text(json.dumps(document))
    assert read_template(path) == document


def test_a_mapping_is_taken_as_it_is() -> None:
    document = {
        "name": "j",
        "parameterDefinitions": [{"name": "D", "type": "PATH", "default": "x"}],
    }
    template = read_template(document)
    assert template == document and template is not document


# -- job bundles -------------------------------------------------------------------------
def test_a_bundle_joins_relative_path_defaults_to_its_directory(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    (bundle / "parameter_values.yaml").write_text("not: [valid")  # never read
    defaults = _defaults(read_template(bundle))
    assert defaults["ScriptDir"] == str(bundle / "scripts")
    assert defaults["OutputDir"] == str(bundle / "output")  # normalised lexically
    assert defaults["Optional"] == ""
    assert defaults["Absolute"] == "/srv/shared"
    assert defaults["Scene"] is None
    assert defaults["Frames"] == "1-10"  # not a PATH


def test_a_relative_bundle_path_is_made_absolute(tmp_path: Path, monkeypatch) -> None:
    _bundle(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert _defaults(read_template("bundle"))["ScriptDir"] == str(tmp_path / "bundle" / "scripts")


def test_a_bundle_keeps_uris_and_joins_list_of_path_items(tmp_path: Path) -> None:
    text = """\
specificationVersion: 'jobtemplate-2023-09'
extensions: [EXPR]
name: lists
parameterDefinitions:
- {name: Inputs, type: 'LIST[PATH]', default: [a.txt, /abs/b.txt, 's3://bucket/c']}
- {name: Remote, type: PATH, default: 's3://bucket/key'}
steps: []
"""
    bundle = _bundle(tmp_path, text=text)
    defaults = _defaults(read_template(bundle))
    assert defaults["Inputs"] == [str(bundle / "a.txt"), "/abs/b.txt", "s3://bucket/c"]
    assert defaults["Remote"] == "s3://bucket/key"


def test_a_bundle_may_hold_template_json(tmp_path: Path) -> None:
    document = {
        "specificationVersion": "jobtemplate-2023-09",
        "name": "j",
        "parameterDefinitions": [{"name": "D", "type": "PATH", "default": "data"}],
        "steps": [],
    }
    bundle = _bundle(tmp_path, "template.json", json.dumps(document))
    assert _defaults(read_template(bundle)) == {"D": str(bundle / "data")}


def test_a_bundle_with_both_templates_is_refused(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    (bundle / "template.json").write_text("{}")
    with pytest.raises(ValidationError, match=r"both template\.yaml and template\.json"):
        read_template(bundle)


def test_a_directory_without_a_template_is_not_a_bundle(tmp_path: Path) -> None:
    (tmp_path / "template.yml").write_text(TEMPLATE)  # Deadline reads .yaml only
    with pytest.raises(ValidationError, match=r"is not a job bundle: it has no template\.yaml"):
        read_template(tmp_path)


# -- what cannot be read -----------------------------------------------------------------
def test_a_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="no template file or job bundle directory at") as e:
        read_template(tmp_path / "nope.yaml")
    assert "nope.yaml" in e.value.message
    assert e.value.details == {"field": "template"}


def test_template_text_given_as_a_path_gets_a_hint() -> None:
    with pytest.raises(ValidationError, match=r"ActionDefinition\(kind='openjd', template=") as e:
        read_template(TEMPLATE * 50)  # far too long for a file name
    assert len(e.value.message) < 300


def test_a_file_that_is_not_a_yaml_mapping_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("steps: [unclosed")
    with pytest.raises(ValidationError, match=r"broken\.yaml: The document is not a valid YAML"):
        read_template(path)
    path.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ValidationError, match="consisting of key-value pairs"):
        read_template(path)
    bundle = _bundle(tmp_path, "template.json", "{not json")
    with pytest.raises(ValidationError, match=r"template\.json: The document is not a valid JSON"):
        read_template(bundle)


def test_a_file_that_is_not_utf8_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValidationError, match=r"cannot read .*latin1\.yaml: 'utf-8' codec"):
        read_template(path)


def test_something_else_is_refused() -> None:
    with pytest.raises(ValidationError, match="not int"):
        read_template(42)  # type: ignore[arg-type]


# -- the definition and what is sent -----------------------------------------------------
def test_openjd_definition_keeps_defaults_for_options_not_given() -> None:
    definition = E.openjd_definition("frames", template={"name": "x"}, max_attempts=5)
    assert definition.kind == "openjd" and definition.max_attempts == 5
    assert definition.queue == "default" and definition.timeout is None
    assert definition.template == {"name": "x"}
    command = E.openjd_definition("greet", command=("echo", "hi"), retry={"retry_on": ["*"]})
    assert command.command == ["echo", "hi"] and command.retry.retry_on == ["*"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "has space", "template": {}}, "name"),
        ({"name": "ok", "template": {}, "max_attempts": 0}, "max_attempts"),
        ({"name": "ok", "command": []}, "command"),
        ({"name": "ok", "template": {}, "requirements": {"gpus": -1}}, "requirements.gpus"),
    ],
)
def test_an_invalid_definition_is_refused_before_sending(kwargs, field) -> None:
    name = kwargs.pop("name")
    with pytest.raises(ValidationError) as e:
        E.openjd_definition(name, **kwargs)
    assert e.value.details["field"] == field


def test_register_template_sends_the_bundle_template_on_both_clients(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    stub, astub = (Stub().on("POST", "/v1/actions", ok(action_json("frames"), 201)) for _ in "ab")
    with stub.client() as client:
        saved = client.actions.register_template("frames", bundle, queue="render", timeout=60)
    assert saved.name == "frames"

    async def run() -> None:
        async with astub.async_client() as client:
            await client.actions.register_template("frames", bundle, queue="render", timeout=60)

    asyncio.run(run())
    sync, aio = (body(s.sent("POST", "/v1/actions")[0]) for s in (stub, astub))
    assert sync == aio
    assert sync["kind"] == "openjd" and sync["queue"] == "render" and sync["timeout"] == 60
    assert _defaults(sync["template"])["ScriptDir"] == str(bundle / "scripts")


def test_queues_list_and_configure_on_both_clients() -> None:
    stats = {
        "name": "render",
        "priority": 5,
        "max_concurrency": 2,
        "depth": 3,
        "running": 1,
        "succeeded": 0,
        "failed": 0,
        "throughput": [0] * 60,
        "at": "2025-01-01T00:00:00Z",
    }
    queue = {
        "id": "q_1",
        "project_id": "prj_1",
        "name": "render",
        "priority": 5,
        "max_concurrency": 2,
        "created_at": "2025-01-01T00:00:00Z",
    }

    def stub() -> Stub:
        return (
            Stub()
            .on("GET", "/v1/queues", lambda _: ok({"items": [stats], "next_cursor": None}))
            .on("PUT", "/v1/queues/render", lambda _: ok(queue))
        )

    sync, aio = stub(), stub()
    with sync.client() as client:
        assert [q.depth for q in client.queues.list()] == [3]
        assert client.queues.configure("render", 5, 2).max_concurrency == 2
        with pytest.raises(ValidationError, match="max_concurrency"):
            client.queues.configure("render", max_concurrency=0)

    async def run() -> None:
        async with aio.async_client() as client:
            assert [q.name for q in await client.queues.list()] == ["render"]
            assert (await client.queues.configure("render", 5, 2)).priority == 5

    asyncio.run(run())
    puts = sync.sent("PUT", "/v1/queues/render") + aio.sent("PUT", "/v1/queues/render")
    assert [body(r) for r in puts] == [{"priority": 5, "max_concurrency": 2}] * 2
