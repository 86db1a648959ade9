-- A pruned partition is detached (with what it must keep moved out) in one transaction and
-- dropped in the next, so the table lock on `datums` is not held while its files are removed.
-- Between the two the partition is marked detached; a prune finds and drops any left so by a
-- crash.
ALTER TABLE datum_partitions ADD COLUMN detached_time timestamptz;
