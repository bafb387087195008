"""OpenJD actions and queues through both SDK clients, against a real server and worker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from oprun import AsyncClient, Client, ValidationError
from oprun.domain import models
from tests.integration._live import Live, live

TIMEOUT = 60

TEMPLATE = """\
specificationVersion: 'jobtemplate-2023-09'
extensions: [TASK_CHUNKING]
name: Frames
parameterDefinitions:
- {name: Frames, type: STRING, default: '1-10'}
- {name: Who, type: STRING}
- {name: ScriptDir, type: PATH, objectType: DIRECTORY, dataFlow: IN, default: scripts}
jobEnvironments:
- name: Greeting
  variables: {GREETING: hello}
steps:
- name: Render
  parameterSpace:
    taskParameterDefinitions:
    - name: Frame
      type: CHUNK[INT]
      range: '{{Param.Frames}}'
      chunks: {defaultTaskCount: 5, rangeConstraint: CONTIGUOUS}
  script:
    actions:
      onRun:
        command: bash
        args: ['{{Param.ScriptDir}}/render.sh', '{{Task.Param.Frame}}', '{{Param.Who}}']
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Live]:
    with live(tmp_path_factory.mktemp("sdk-openjd")) as running:
        yield running


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def bundle(folder: Path) -> Path:
    """A job bundle whose step runs a script from the bundle's own scripts directory."""
    path = folder / "bundle"
    (path / "scripts").mkdir(parents=True)
    (path / "template.yaml").write_text(TEMPLATE)
    (path / "scripts" / "render.sh").write_text('echo "$GREETING $2: frames $1"\n')
    (path / "parameter_values.yaml").write_text("parameterValues: [{name: Who, value: nobody}]\n")
    return path


def test_register_template_invoke_and_configure_a_queue_sync(env: Live, tmp_path: Path) -> None:
    name, queue = unique("frames"), unique("render")
    with Client(env.url, env.token) as client:
        action = client.actions.register_template(
            name, bundle(tmp_path), max_attempts=2, retry={"retry_on": ["*"]}
        )
        assert action.definition.kind is models.ActionKind.OPENJD
        assert [p.name for p in action.definition.parameters] == ["Frames", "Who", "ScriptDir"]
        assert action.definition.max_attempts == 2
        assert action.definition.retry.retry_on == ["*"]
        again = client.actions.register_template(
            name, bundle(tmp_path / "again"), max_attempts=2, retry={"retry_on": ["*"]}
        )
        assert again.version == 2  # another directory: another ScriptDir default

        op = client.operations.invoke(name, {"Who": "world"}).wait_until_done(timeout=TIMEOUT)
        assert op.progress.counts.succeeded == 2
        lines = [record.line for record in op.logs()]
        assert "hello world: frames 1-5" in lines and "hello world: frames 6-10" in lines

        shout = client.actions.register(
            models.ActionDefinition(
                name=unique("shout"), kind="openjd", command=["echo", "{{Param.Word}}"]
            )
        )
        said = client.operations.invoke(shout.name, {"Word": "hey"}).wait_until_done(TIMEOUT)
        assert "hey" in [record.line for record in said.logs()]

        configured = client.queues.configure(queue, priority=5, max_concurrency=2)
        assert (configured.name, configured.priority, configured.max_concurrency) == (queue, 5, 2)
        listed = {q.name: q for q in client.queues.list()}
        assert (listed[queue].priority, listed[queue].max_concurrency) == (5, 2)
        client.queues.configure(queue)  # both settings back to their defaults
        listed = {q.name: q for q in client.queues.list()}
        assert (listed[queue].priority, listed[queue].max_concurrency) == (0, None)

        with pytest.raises(ValidationError, match="job template is not valid") as bad:
            client.actions.register_template(name, {"specificationVersion": "jobtemplate-2023-09"})
        assert "model_error" in bad.value.details


def test_register_template_invoke_and_configure_a_queue_async(env: Live, tmp_path: Path) -> None:
    name, queue = unique("frames"), unique("render")
    template = tmp_path / "frames.yaml"  # a plain template file: no bundle directory to join
    template.write_text(
        TEMPLATE.replace("default: scripts", f"default: {bundle(tmp_path) / 'scripts'}")
    )

    async def run() -> None:
        async with AsyncClient(env.url, env.token) as client:
            action = await client.actions.register_template(name, template, queue="default")
            assert action.definition.parameters[2].default == str(tmp_path / "bundle" / "scripts")
            op = await client.operations.invoke(name, {"Who": "async", "Frames": "1-3"})
            op = await op.wait_until_done(timeout=TIMEOUT)
            assert op.progress.counts.succeeded == 1
            assert "hello async: frames 1-3" in [record.line async for record in op.logs()]

            configured = await client.queues.configure(queue, priority=-3, max_concurrency=9)
            assert (configured.priority, configured.max_concurrency) == (-3, 9)
            listed = {q.name: q for q in await client.queues.list()}
            assert (listed[queue].priority, listed[queue].max_concurrency) == (-3, 9)

            with pytest.raises(ValidationError, match="is not a job bundle"):
                await client.actions.register_template(name, tmp_path)

    asyncio.run(run())
