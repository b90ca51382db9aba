"""The lmbench plugin comes from the ``pytest11`` entry point of the installed package (``pip install -e .``).

Where the package is importable but not installed (a bare checkout on ``PYTHONPATH``), load the plugin from here so
``pytest benches`` still works; never twice.
"""
from importlib.metadata import entry_points

if not any(ep.value == "harness.pytest_plugin" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["harness.pytest_plugin"]
