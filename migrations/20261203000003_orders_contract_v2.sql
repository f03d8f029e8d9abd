-- Contract v2's optional parts. NULL on every row set by a v1 event, and on rows written before
-- these columns existed: a v1 event of a higher version clears them, since each event is the
-- order's whole state. Nullable without a default, so adding them rewrites no row.
ALTER TABLE orders
    ADD COLUMN discount_minor bigint CHECK (discount_minor >= 0),
    ADD COLUMN shipping       jsonb;

COMMENT ON COLUMN orders.discount_minor IS
    'Contract v2: discount in the currency''s minor unit; total_minor = sum of the items - discount_minor.';
COMMENT ON COLUMN orders.shipping IS
    'Contract v2: {"method", "country" (ISO 3166-1 alpha-2), "postal_code"?, "city"?}; NULL when the event had none.';
