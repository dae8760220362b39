-- name: daily_volume
-- Events and interactions per UTC day and interaction type, from the index columns only.
-- params: from, to (RFC 3339; from inclusive, to exclusive)
-- example: holdfast query --file sql/reports/daily_volume.sql --param from=2025-10-01T00:00:00Z --param to=2025-11-01T00:00:00Z
-- test: from=2024-11-01T00:00:00Z to=2025-11-01T00:00:00Z
SELECT year, month, day, interaction_type, count(*) AS events, count(DISTINCT interaction_id) AS interactions
FROM events
WHERE occurred_at >= CAST({{from}} AS TIMESTAMP) AND occurred_at < CAST({{to}} AS TIMESTAMP)
GROUP BY year, month, day, interaction_type
ORDER BY year, month, day, interaction_type
