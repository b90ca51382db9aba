"""Results: the record schema and writer, target files, and the one finaliser (cell + result → record + verdict)."""
