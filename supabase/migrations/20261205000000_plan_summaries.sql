-- The summary a home owner reads of each stored plan (action blocks with their reasons, the
-- bills and the savings), written once with the plan so every reader shows the same figures.
-- ts is the plan's first step, as in dispatch_plans.
CREATE TABLE IF NOT EXISTS plan_summaries (
    device_id  text NOT NULL,
    ts         timestamptz NOT NULL,
    issued_at  timestamptz NOT NULL,
    summary    jsonb,
    PRIMARY KEY (device_id, ts, issued_at)
);

ALTER TABLE plan_summaries ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS service_role_all ON plan_summaries;
CREATE POLICY service_role_all ON plan_summaries FOR ALL TO service_role USING (true) WITH CHECK (true);
REVOKE ALL ON plan_summaries FROM anon, authenticated;
GRANT ALL ON plan_summaries TO service_role;
