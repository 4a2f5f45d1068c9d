"""Click commands, one module each, imported by deploykit.cli only when run."""
