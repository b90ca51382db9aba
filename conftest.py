# The lmbench plugin (options, markers, fixtures, records) is loaded for every pytest run from the repo root.
pytest_plugins = ["fixtures.plugin"]
