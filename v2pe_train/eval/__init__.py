"""Evaluation: the published scorers (`normalize`, `scorers`, `mmniah`, `milebench`, `rectify` with `lemma`) and
the table that says which one scores a record and how long its reply may be (`tasks`) are pure functions;
`inference` and `teacher_forced` load a model and answer records with V2PE positions; `inputs` reads what is
evaluated, `run` writes resumable predictions and scores them, `report` turns scores into tables and heatmaps
and `mmniah_report` reads MM-NIAH's answer files and aggregates as MM-NIAH does."""
