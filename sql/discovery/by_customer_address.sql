-- name: by_customer_address
-- Every event with a participant at an address (phone number or e-mail), found through the
-- blind index without decrypting anything. Needs --decrypt --case --actor (computing a blind
-- index is gated and audited like a decryption; the address is not written to the audit trail).
-- params: address (any spelling: "+1 (202) 555-0143", "tel:+12025550143", "Client@Example.net")
-- requires: decrypt
-- example: holdfast query --decrypt --case SEC-INV-2024-0892 --actor jdoe --file sql/discovery/by_customer_address.sql --param address="+1 555 019 8765"
-- test: address=+1 (202) 555-0143
SELECT tenant_id, interaction_id, event_id, state, occurred_at, interaction_type, source_platform
FROM events
WHERE array_has(address_hmacs, blind_index(tenant_id, {{address}}))
ORDER BY occurred_at, event_id
