-- orders is rewritten continuously (every new version of an order updates its row), so
-- autovacuum analyzes it often: at the server's default of 10% of the rows changed, every ~1M
-- version updates on a 10M-row table. Each ANALYZE reads 300 x (statistics target) sample rows
-- and sorts them per column, all at once; with the default target of 100 that is 30,000 rows
-- and a CPU burst of ~0.2 s, which the writers wait behind on a small server (on 2 cores,
-- p99 write latency rose from ~60 ms to 150-250 ms during one; docs/performance.md#decisions).
-- A target of 25 (7,500 rows) keeps every status, currency
-- and event type among the most common values and a 25-bucket histogram for ranges. For
-- reporting queries that need finer estimates, raise a column's target again, e.g.
--   ALTER TABLE orders ALTER COLUMN customer_id SET STATISTICS 100;
-- (`items` stays at 0: statistics on whole line-item arrays tell the planner nothing.)
ALTER TABLE orders
    ALTER COLUMN order_id SET STATISTICS 25,
    ALTER COLUMN version SET STATISTICS 25,
    ALTER COLUMN customer_id SET STATISTICS 25,
    ALTER COLUMN status SET STATISTICS 25,
    ALTER COLUMN currency SET STATISTICS 25,
    ALTER COLUMN total_minor SET STATISTICS 25,
    ALTER COLUMN occurred_at SET STATISTICS 25,
    ALTER COLUMN last_event_id SET STATISTICS 25,
    ALTER COLUMN last_event_type SET STATISTICS 25,
    ALTER COLUMN source_topic SET STATISTICS 25,
    ALTER COLUMN source_partition SET STATISTICS 25,
    ALTER COLUMN source_offset SET STATISTICS 25,
    ALTER COLUMN first_applied_at SET STATISTICS 25,
    ALTER COLUMN applied_at SET STATISTICS 25;
