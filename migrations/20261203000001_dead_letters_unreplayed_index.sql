-- The worker exports how many dead letters wait to be replayed, by reason
-- (order_worker_dead_letters_unreplayed), counting them once a minute. This index holds only
-- those rows, so the count reads them alone however many replayed ones the table keeps.
CREATE INDEX dead_letters_unreplayed_idx ON dead_letters (reason) WHERE replayed_at IS NULL;
