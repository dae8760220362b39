-- name: by_queue
-- Every event routed through a queue in a time range: from (inclusive) to (exclusive), UTC.
-- params: queue (queue id), from, to (RFC 3339)
-- example: holdfast query --file sql/discovery/by_queue.sql --param queue=q-lend --param from=2024-11-01T00:00:00Z --param to=2024-12-01T00:00:00Z
-- test: queue=q-legacy from=2025-10-01T00:00:00Z to=2025-10-02T00:00:00Z
SELECT tenant_id, interaction_id, event_id, state, occurred_at, interaction_type, agent_ids, wrap_up_code, disposition
FROM events
WHERE queue_id = {{queue}}
  AND occurred_at >= CAST({{from}} AS TIMESTAMP) AND occurred_at < CAST({{to}} AS TIMESTAMP)
  AND year * 10000 + month * 100 + day BETWEEN CAST(to_char(CAST({{from}} AS TIMESTAMP), '%Y%m%d') AS INT)
                                         AND CAST(to_char(CAST({{to}} AS TIMESTAMP), '%Y%m%d') AS INT)
ORDER BY occurred_at, event_id
