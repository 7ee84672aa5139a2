"""Evaluation: the published scorers (`normalize`, `scorers`) and the table that says which one scores a
record and how long its reply may be (`tasks`). Pure functions only: no model, no files, no global state."""
