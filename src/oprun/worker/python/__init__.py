"""The python executor: python actions run in reusable child processes.

`child` is the child's main (`python -m oprun.worker.python.child`), `process`
the worker's side of one child, `execution` one task run on a child. Nothing is
imported here: the child imports this package and must start fast.
"""
