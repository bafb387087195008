"""OpenJD job templates: loading, validation errors, the command shorthand, parameters, plans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from oprun.domain.errors import TooLarge, ValidationError
from oprun.domain.params import validate_parameters
from oprun.openjd import (
    COMMAND_STEP_NAME,
    command_template,
    job_environment_names,
    load_template,
    parameter_specs,
    plan_job,
    step_environment_names,
    task_parameter_set,
)
from oprun.openjd.job import tag_task_parameters

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "openjd"
BLENDER = (FIXTURES / "blender_render.yaml").read_text()

SIMPLE_YAML = """
specificationVersion: jobtemplate-2023-09
name: Hello
parameterDefinitions:
- name: Who
  type: STRING
  default: world
steps:
- name: Greet
  script:
    actions:
      onRun:
        command: echo
        args: ["hello {{Param.Who}}"]
"""


def test_load_template_accepts_yaml_json_and_a_mapping_alike():
    from_yaml = load_template(SIMPLE_YAML)
    from_json = load_template(json.dumps(yaml.safe_load(SIMPLE_YAML)))
    from_mapping = load_template(yaml.safe_load(SIMPLE_YAML))
    assert from_yaml == from_json == from_mapping
    assert from_yaml["steps"][0]["name"] == "Greet"
    json.dumps(from_yaml)  # what we store is plain JSON


def test_invalid_template_raises_validation_error_quoting_the_model_with_the_field_path():
    template = yaml.safe_load(SIMPLE_YAML)
    del template["steps"][0]["script"]["actions"]["onRun"]
    with pytest.raises(ValidationError) as caught:
        load_template(template)
    err = caught.value
    assert err.http_status == 400
    assert "Field required" in err.message
    assert "steps[0] -> script -> actions -> onRun" in err.message  # the model's own text
    assert err.details["field"] == "steps[0].script.actions.onRun"
    assert err.details["errors"] == [
        {"field": "steps[0].script.actions.onRun", "message": "Field required"}
    ]


def test_template_referring_to_an_undefined_parameter_names_the_field():
    template = yaml.safe_load(SIMPLE_YAML)
    template["steps"][0]["script"]["actions"]["onRun"]["args"] = ["{{Param.Nope}}"]
    with pytest.raises(ValidationError) as caught:
        load_template(template)
    assert "Variable Param.Nope does not exist" in caught.value.message
    assert caught.value.details["field"] == "steps[0].script.actions.onRun.args[0]"


@pytest.mark.parametrize(
    ("source", "quoted"),
    [
        ("steps: [", "not a valid YAML document"),
        ("- just\n- a list\n", "not a valid YAML document"),
        ('{"name": ', "not a valid JSON document"),
        ({"specificationVersion": "jobtemplate-2099-01"}, "Unknown template version"),
        ({"name": "x"}, "missing Open Job Description schema version"),
    ],
)
def test_unreadable_templates_raise_validation_error(source, quoted):
    with pytest.raises(ValidationError) as caught:
        load_template(source)
    assert quoted in caught.value.message
    assert caught.value.details["model_error"] in caught.value.message


def test_an_extension_oprun_does_not_support_is_refused():
    template = yaml.safe_load(SIMPLE_YAML)
    template["extensions"] = ["WRAP_ACTIONS"]
    with pytest.raises(ValidationError, match="WRAP_ACTIONS"):
        load_template(template)


def test_chunking_without_the_extension_is_refused_by_the_model():
    template = yaml.safe_load(BLENDER)
    del template["extensions"]
    with pytest.raises(ValidationError, match="requires the TASK_CHUNKING extension"):
        load_template(template)


def test_command_shorthand_becomes_a_one_step_template():
    template = command_template("Copy", ["cp", "-r", "/data/in", "/data/out"])
    assert load_template(template) == template
    (step,) = template["steps"]
    assert step["name"] == COMMAND_STEP_NAME == "run"
    assert step["script"]["actions"]["onRun"] == {
        "command": "cp",
        "args": ["-r", "/data/in", "/data/out"],
    }
    assert "parameterDefinitions" not in template
    assert [(p.name, len(p.tasks)) for p in plan_job(template, {})] == [("run", 1)]
    assert command_template("Ls", ["ls"])["steps"][0]["script"]["actions"]["onRun"] == {
        "command": "ls"
    }


def test_command_shorthand_declares_the_job_parameters_it_refers_to():
    template = command_template("Encode", ["ffmpeg", "-i", "{{Param.Input}}", "{{ Param.Out }}"])
    specs = parameter_specs(template)
    assert [(s.name, s.type, s.required) for s in specs] == [
        ("Input", "string", True),
        ("Out", "string", True),
    ]
    with pytest.raises(ValidationError) as caught:
        validate_parameters(specs, {"Input": "a.mov"})
    assert caught.value.details["parameter"] == "Out"
    assert plan_job(template, {"Input": "a.mov", "Out": "b.mp4"})[0].tasks == ({},)


@pytest.mark.parametrize("argv", [[], [""], ["echo", 3], ["echo", "{{Task.Param.Frame}}"]], ids=str)
def test_command_shorthand_rejects_what_cannot_run(argv):
    with pytest.raises(ValidationError) as caught:
        command_template("Bad", argv)
    assert caught.value.details["field"] == "command"


def test_parameter_specs_map_types_defaults_ranges_and_allowed_values():
    specs = {s.name: s for s in parameter_specs(load_template(BLENDER))}
    assert specs["JobName"].type == "string"
    assert specs["JobName"].default == "Blender Render"
    assert not specs["JobName"].required
    assert specs["BlenderSceneFile"].type == "path"
    assert specs["BlenderSceneFile"].required
    assert specs["BlenderSceneFile"].description == "The Blender scene file to render."
    assert (specs["FramesPerTask"].type, specs["FramesPerTask"].default) == ("int", 10)
    assert (specs["FramesPerTask"].minimum, specs["FramesPerTask"].maximum) == (1, 1000)
    assert specs["Format"].allowed == ["PNG", "JPEG", "OPEN_EXR", "TIFF"]
    scale = specs["ResolutionScale"]
    assert (scale.type, scale.default, scale.minimum, scale.maximum) == ("float", 1.0, 0.1, 2.0)
    assert isinstance(scale.default, float)


def test_invocation_parameters_are_validated_by_validate_parameters_naming_the_parameter():
    specs = parameter_specs(load_template(BLENDER))
    values = validate_parameters(specs, {"BlenderSceneFile": "/s.blend", "FramesPerTask": "5"})
    assert values["FramesPerTask"] == 5
    assert values["Format"] == "PNG"
    for bad, name in [
        ({}, "BlenderSceneFile"),
        ({"BlenderSceneFile": "/s.blend", "FramesPerTask": 0}, "FramesPerTask"),
        ({"BlenderSceneFile": "/s.blend", "Format": "GIF"}, "Format"),
        ({"BlenderSceneFile": "/s.blend", "ResolutionScale": 3.5}, "ResolutionScale"),
        ({"BlenderSceneFile": "/s.blend", "Nope": 1}, "Nope"),
    ]:
        with pytest.raises(ValidationError) as caught:
            validate_parameters(specs, bad)
        assert caught.value.details["parameter"] == name
        assert name in caught.value.message


def test_expr_parameter_types_map_onto_oprun_types():
    template = {
        "specificationVersion": "jobtemplate-2023-09",
        "extensions": ["EXPR"],
        "name": "x",
        "parameterDefinitions": [
            {"name": "Flag", "type": "BOOL", "default": True},
            {"name": "Sizes", "type": "LIST[FLOAT]", "default": [1.5, 2]},
        ],
        "steps": [
            {
                "name": "a",
                "script": {"actions": {"onRun": {"command": "echo", "args": ["{{Param.Flag}}"]}}},
            }
        ],
    }
    specs = {s.name: s for s in parameter_specs(load_template(template))}
    assert (specs["Flag"].type, specs["Flag"].default) == ("bool", True)
    assert (specs["Sizes"].type, specs["Sizes"].default) == ("json", [1.5, 2])
    json.dumps(specs["Sizes"].default)


def test_deadline_job_bundle_template_plans_chunks_of_frames_and_the_dependent_step():
    template = load_template(BLENDER)
    assert job_environment_names(template) == ["BlenderEnvironment"]
    assert step_environment_names(template, "RenderBlender") == ["RenderSettings"]
    assert step_environment_names(template, "EncodePreview") == []
    render, encode = plan_job(template, {"BlenderSceneFile": "/scenes/shot.blend"})
    assert (render.name, render.depends_on) == ("RenderBlender", ())
    assert [t["Frame"] for t in render.tasks] == [
        {"chunkInt": f"{first}-{first + 9}"} for first in range(1, 100, 10)
    ]
    assert (encode.name, encode.depends_on, encode.tasks) == (
        "EncodePreview",
        ("RenderBlender",),
        ({},),
    )
    (render,) = plan_job(
        template,
        {"BlenderSceneFile": "/s.blend", "Frames": "1-3,42,99-100", "FramesPerTask": 2},
    )[:1]
    assert [t["Frame"]["chunkInt"] for t in render.tasks] == ["1-2", "3-3", "42-42", "99-100"]


def test_unknown_step_has_no_environments():
    with pytest.raises(ValidationError, match="no step 'Nope'"):
        step_environment_names(load_template(BLENDER), "Nope")


@pytest.mark.parametrize(
    ("values", "quoted", "parameter"),
    [
        ({}, "Values missing for required job parameters: BlenderSceneFile", "BlenderSceneFile"),
        (
            {"BlenderSceneFile": "/s.blend", "FramesPerTask": 0},
            "Value (0) for parameter FramesPerTask must be at least 1.",
            "FramesPerTask",
        ),
        (
            {"BlenderSceneFile": "/s.blend", "Frames": ""},
            "for parameter Frames value must be at least 1 characters",
            "Frames",
        ),
        (
            {"BlenderSceneFile": "/s.blend", "Extra": "1"},
            "not defined in the template: Extra",
            None,
        ),
    ],
)
def test_plan_job_quotes_the_model_for_bad_job_parameters(values, quoted, parameter):
    with pytest.raises(ValidationError) as caught:
        plan_job(load_template(BLENDER), values)
    assert quoted in caught.value.message
    assert caught.value.details.get("parameter") == parameter


def test_a_frame_range_that_is_not_one_is_a_validation_error():
    with pytest.raises(ValidationError, match="job parameters are not valid"):
        plan_job(load_template(BLENDER), {"BlenderSceneFile": "/s.blend", "Frames": "ten"})


def test_a_step_with_too_many_tasks_is_refused():
    template = load_template(BLENDER)
    with pytest.raises(TooLarge, match="RenderBlender"):
        plan_job(template, {"BlenderSceneFile": "/s", "Frames": "1-200000", "FramesPerTask": 1})


def test_task_parameters_round_trip_through_deadlines_tagged_union():
    tagged = {
        "Frame": {"int": "3"},
        "Scale": {"float": "0.5"},
        "Name": {"string": "a b"},
        "In": {"path": "/x"},
        "Chunk": {"chunkInt": "1-5"},
    }
    assert tag_task_parameters(task_parameter_set(tagged)) == tagged
    with pytest.raises(ValidationError) as caught:
        task_parameter_set({"Frame": {"bool": "1"}})
    assert caught.value.details["parameter"] == "Frame"
