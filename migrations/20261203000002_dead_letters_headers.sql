-- The original message's Kafka headers (trace context, correlation ids, producer identity), so a
-- dead letter can be traced and is replayed with them. A JSON array in the message's order,
-- duplicates kept: {"key": ..., "value": text} for a UTF-8 value, {"key": ..., "value_base64":
-- ...} for any other bytes, {"key": ..., "value": null} for a null value. NULL for a message
-- without headers. Nullable without a default: adding it rewrites no row, and a worker that
-- does not write it keeps working.
ALTER TABLE dead_letters ADD COLUMN headers jsonb;

COMMENT ON COLUMN dead_letters.headers IS
    'The original message''s Kafka headers, in order: [{"key", "value" | "value_base64"}]; NULL when it had none.';
