"""OpenJD actions and queues through the real `oprun` command, a real server and a real worker.

A Deadline Cloud job bundle (template, scripts directory, parameter values) is
registered from its directory as it is and run by the worker in OpenJD sessions.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Cli
from tests.e2e.test_cli import invoked_id, one_error_line
from tests.integration.conftest import Tenant

BUNDLE_TEMPLATE = """\
specificationVersion: 'jobtemplate-2023-09'
extensions: [TASK_CHUNKING]
name: Frames
parameterDefinitions:
- {name: Frames, type: STRING, default: '1-10'}
- {name: FramesPerTask, type: INT, default: 5, minValue: 1}
- {name: Label, type: STRING}
- {name: OutputDir, type: PATH, objectType: DIRECTORY, dataFlow: OUT}
- name: ScriptDir
  type: PATH
  objectType: DIRECTORY
  dataFlow: IN
  default: scripts
  userInterface: {control: HIDDEN}
jobEnvironments:
- name: Scene
  variables:
    SCENE_LABEL: '{{Param.Label}}'
  script:
    actions:
      onEnter:
        command: bash
        args: ['-c', 'mkdir -p "{{Param.OutputDir}}" && echo "entered $SCENE_LABEL" >> "{{Param.OutputDir}}/environment.log"']
steps:
- name: Render
  parameterSpace:
    taskParameterDefinitions:
    - name: Frame
      type: CHUNK[INT]
      range: '{{Param.Frames}}'
      chunks:
        defaultTaskCount: '{{Param.FramesPerTask}}'
        rangeConstraint: CONTIGUOUS
  script:
    actions:
      onRun:
        command: bash
        args: ['{{Param.ScriptDir}}/render.sh', '{{Task.Param.Frame}}', '{{Param.OutputDir}}']
"""

RENDER_SH = """\
set -euo pipefail
echo "$SCENE_LABEL frames $1"
echo "$1" > "$2/frames-$1.txt"
"""

# Deadline's CLI would submit these; oprun takes job parameters as `-p Name=value`.
PARAMETER_VALUES = """\
parameterValues:
- {name: Label, value: from-parameter-values}
- {name: 'deadline:priority', value: 50}
"""


@pytest.fixture
def server(tenant: Tenant) -> Tenant:
    """A project of its own on the module's shared server (its worker serves it alone)."""
    return tenant


def write_bundle(folder: Path, template: str = BUNDLE_TEMPLATE) -> Path:
    """A job bundle as `deadline bundle submit` takes it: template, scripts, values."""
    bundle = folder / "frames_bundle"
    (bundle / "scripts").mkdir(parents=True)
    (bundle / "template.yaml").write_text(template)
    (bundle / "scripts" / "render.sh").write_text(RENDER_SH)
    (bundle / "parameter_values.yaml").write_text(PARAMETER_VALUES)
    return bundle


def logs(api: httpx.Client, op_id: str) -> list[str]:
    page = api.get(f"/v1/operations/{op_id}/logs", params={"limit": 500}).json()
    return [record["line"] for record in page["items"]]


@pytest.mark.usefixtures("worker")
def test_a_job_bundle_registers_from_its_directory_and_runs_in_chunks(
    cli: Cli, api: httpx.Client, tmp_path: Path
) -> None:
    bundle = write_bundle(tmp_path)
    registered = cli(
        "actions", "register-template", "frames", str(bundle),
        "--max-attempts", "2", "--retry-on", "EXIT",
    )  # fmt: skip
    assert registered.returncode == 0, registered
    for expected in ("frames", "openjd", "Render", "FramesPerTask", "Label"):
        assert expected in registered.stdout, registered

    saved = json.loads(cli("actions", "get", "frames", "-o", "json").stdout)
    definition = saved["definition"]
    assert definition["kind"] == "openjd" and definition["max_attempts"] == 2
    assert definition["retry"]["retry_on"] == ["EXIT"]
    assert [p["name"] for p in definition["parameters"]] == [
        "Frames",
        "FramesPerTask",
        "Label",
        "OutputDir",
        "ScriptDir",
    ]
    script_dir = definition["template"]["parameterDefinitions"][4]["default"]
    assert script_dir == str(bundle / "scripts")  # joined to the bundle, as Deadline does

    out = tmp_path / "out"
    ran = cli("invoke", "frames", "-p", "Label=shot42", "-p", f"OutputDir={out}", "--wait")
    assert ran.returncode == 0, ran
    assert ran.stdout.startswith("op_") and " frames SUCCEEDED" in ran.stdout, ran
    assert ran.stderr == "", ran

    op_id = ran.stdout.split()[0]
    op = api.get(f"/v1/operations/{op_id}").json()
    assert op["progress"]["counts"]["succeeded"] == 2, op  # 1-10 in chunks of 5
    assert sorted(p.name for p in out.glob("frames-*.txt")) == [
        "frames-1-5.txt",
        "frames-6-10.txt",
    ]
    assert "entered shot42" in (out / "environment.log").read_text()
    lines = logs(api, op_id)
    assert any("shot42 frames 1-5" in line for line in lines), lines
    assert not any("from-parameter-values" in line for line in lines), lines


@pytest.mark.usefixtures("worker")
def test_register_command_then_invoke_it(cli: Cli, api: httpx.Client) -> None:
    registered = cli(
        "-o", "json", "actions", "register-command", "shout", "--timeout", "60",
        "--", "bash", "-c", "echo hello {{Param.Who}}",
    )  # fmt: skip
    assert registered.returncode == 0, registered
    saved = json.loads(registered.stdout)
    assert saved["definition"]["command"] == ["bash", "-c", "echo hello {{Param.Who}}"]
    assert [p["name"] for p in saved["definition"]["parameters"]] == ["Who"]

    op_id = invoked_id(cli("-o", "json", "invoke", "shout", "-p", "Who=world", "--wait"))
    assert "hello world" in logs(api, op_id)

    missing = cli("invoke", "shout")
    assert "Who" in one_error_line(missing, "VALIDATION"), missing
    assert missing.returncode == 2, missing


def test_queues_set_then_list_shows_priority_and_limit(cli: Cli, api: httpx.Client) -> None:
    ran = cli("queues", "set", "render", "--priority", "7", "--max-concurrency", "3")
    assert ran.returncode == 0, ran
    assert ran.stdout == "render: priority 7, max concurrency 3\n", ran

    listed = cli("queues", "list", "-o", "json")
    assert listed.returncode == 0, listed
    render = next(q for q in json.loads(listed.stdout) if q["name"] == "render")
    assert (render["priority"], render["max_concurrency"], render["depth"]) == (7, 3, 0)

    lifted = cli("-o", "json", "queues", "set", "render", "--no-limit")
    assert lifted.returncode == 0, lifted
    queue = json.loads(lifted.stdout)
    assert (queue["priority"], queue["max_concurrency"]) == (7, None)  # priority kept

    table = cli("queues", "list")
    assert table.returncode == 0, table
    assert table.stdout.splitlines()[0].split()[:2] == ["NAME", "PRIORITY"], table
    assert any(
        row.split()[:4] == ["render", "7", "no", "limit"] for row in table.stdout.splitlines()
    )

    secret = api.post("/v1/tokens", json={"name": "ops", "role": "operator"}).json()["secret"]
    denied = cli("queues", "set", "render", "--priority", "1", token=secret)
    one_error_line(denied, "ACCESS_DENIED")
    assert denied.returncode == 1, denied


def test_an_invalid_template_is_one_validation_line_and_exit_2(cli: Cli, tmp_path: Path) -> None:
    broken = BUNDLE_TEMPLATE.replace(
        "        command: bash\n        args: ['{{Param", "        args: ['{{Param"
    )
    assert broken != BUNDLE_TEMPLATE
    bundle = write_bundle(tmp_path, broken)
    ran = cli("actions", "register-template", "broken", str(bundle))
    line = one_error_line(ran, "VALIDATION")
    assert ran.returncode == 2, ran
    assert "job template is not valid" in line, ran
    assert "steps[0] -> script -> actions -> onRun -> command: Field required" in line, ran

    not_yaml = tmp_path / "not_yaml.yaml"
    not_yaml.write_text("steps: [unclosed\n")
    ran = cli("actions", "register-template", "broken", str(not_yaml))
    assert "not_yaml.yaml: The document is not a valid YAML" in one_error_line(ran, "VALIDATION")
    assert ran.returncode == 2, ran

    ran = cli("actions", "register-template", "broken", str(tmp_path / "scripts"))
    assert "no template file or job bundle directory" in one_error_line(ran, "VALIDATION")
    assert ran.returncode == 2, ran

    ran = cli("actions", "register-command", "empty")
    one_error_line(ran, "USAGE")
    assert ran.returncode == 2, ran
