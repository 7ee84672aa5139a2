"""The task plug-ins (long_vqa, long_mr, milebench); `v2pe_data.task_registry` names them, `base` is their contract."""
