-- name: by_agent
-- Every event an agent took part in, in a time range: from (inclusive) to (exclusive), UTC.
-- The day bounds on the partition columns let the scan read only the days in range.
-- params: agent (as in agent_ids: the agent's address or id), from, to (RFC 3339)
-- example: holdfast query --file sql/discovery/by_agent.sql --param agent=jdoe --param from=2024-11-01T00:00:00Z --param to=2024-11-08T00:00:00Z
-- test: agent=1044812 from=2024-11-01T00:00:00Z to=2024-11-08T00:00:00Z
SELECT tenant_id, interaction_id, event_id, state, occurred_at, interaction_type, queue_id, disposition
FROM events
WHERE array_has(agent_ids, {{agent}})
  AND occurred_at >= CAST({{from}} AS TIMESTAMP) AND occurred_at < CAST({{to}} AS TIMESTAMP)
  AND year * 10000 + month * 100 + day BETWEEN CAST(to_char(CAST({{from}} AS TIMESTAMP), '%Y%m%d') AS INT)
                                         AND CAST(to_char(CAST({{to}} AS TIMESTAMP), '%Y%m%d') AS INT)
ORDER BY occurred_at, event_id
