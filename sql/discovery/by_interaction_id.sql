-- name: by_interaction_id
-- Every stored event of one interaction (all legs, all tenants), oldest first.
-- params: interaction_id
-- example: holdfast query --file sql/discovery/by_interaction_id.sql --param interaction_id=c-1001
-- test: interaction_id=c-1001
SELECT tenant_id, interaction_id, event_id, state, occurred_at, interaction_type, direction, queue_id, agent_ids, disposition
FROM events
WHERE interaction_id = {{interaction_id}}
ORDER BY occurred_at, event_id
