"""Tasks turn a sample index into a SamplePlan. Each task module exposes `plan(ctx, index) -> SamplePlan`."""
