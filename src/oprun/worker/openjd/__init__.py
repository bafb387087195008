"""The OpenJD executor: an operation's tasks run in turn in one OpenJD session.

`host` is the process that runs the openjd `Session` (`python -m
oprun.worker.openjd.host`), `link` the worker's connection to it, `session` the
session's rules (environments entered once, exited in reverse), `execution` a
session of tasks on this worker. Nothing is imported here: the host imports this
package.
"""
