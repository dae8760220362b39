-- name: sweep_candidates
-- The retention planner's input: every committed file with records that have expired by now,
-- from the manifests alone. The planner (src/retention) splits them into whole files to
-- delete and mixed files to keep.
-- params: none (the planner filters by its own clock)
-- example: holdfast query --file sql/retention/sweep_candidates.sql
-- test:
SELECT partition, path, record_count, earliest_expiry, latest_expiry
FROM manifests
ORDER BY partition, path
