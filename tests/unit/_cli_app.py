"""A tiny app for `oprun actions register` tests."""

from oprun import App

app = App("cli-test")


@app.action
def add(ctx, a: int, b: int = 1) -> int:
    """Add two numbers."""
    return a + b
