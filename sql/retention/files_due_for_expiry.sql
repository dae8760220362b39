-- name: files_due_for_expiry
-- Committed data files with records expiring before a date, from the manifests only (no data
-- file is opened): whole files (every record expired) and mixed ones. Hold coverage joins here
-- once legal holds exist.
-- params: before (RFC 3339)
-- example: holdfast query --file sql/retention/files_due_for_expiry.sql --param before=2031-06-01T00:00:00Z
-- test: before=2030-11-06T00:00:00Z
SELECT partition, record_count, earliest_expiry, latest_expiry, policy_ids,
       latest_expiry < CAST({{before}} AS TIMESTAMP) AS whole_file_expired
FROM manifests
WHERE earliest_expiry < CAST({{before}} AS TIMESTAMP)
ORDER BY partition, earliest_expiry
