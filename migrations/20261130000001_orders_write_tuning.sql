-- Each order row is updated several times (one update per new version). With full pages
-- (fillfactor 100) every update moves the row to another page and adds an index entry; leaving
-- 15% of each page free lets most updates stay on the page (HOT updates: no index entry, dead
-- versions pruned in place), which costs PostgreSQL less per update and leaves autovacuum less
-- to do. Pages written before this migration keep their layout until rewritten
-- (docs/performance.md#decisions).
ALTER TABLE orders SET (fillfactor = 85);

-- ANALYZE's statistics on `items` (whole line-item arrays, nearly unique per order) tell the
-- planner nothing it can use, and were ~40% of ANALYZE's time on `orders` (282-351 ms against
-- 175-194 ms without, on 800k rows). Autovacuum analyzes a table that is being written; on a
-- busy, small server that time competes with the writes.
ALTER TABLE orders ALTER COLUMN items SET STATISTICS 0;
