-- Demand response (cloud/dr): events as received and decided, and what each delivered.
-- dr_events.start_ts..end_ts is the window [start, end) in UTC; sites is a JSON list (empty: the whole fleet).
-- dr_results holds one row per (event, site or 'fleet', baseline kind); the forecast baseline is
-- written when the event is decided and measured/delivered when the window has passed.
CREATE TABLE IF NOT EXISTS dr_events (
    source       text NOT NULL,
    event_id     text NOT NULL,
    modification bigint,
    received_at  timestamptz,
    start_ts     timestamptz,
    end_ts       timestamptz,
    signal       text,
    value        double precision,
    sites        jsonb,
    status       text,
    reason       text,
    planned_kw   double precision,
    PRIMARY KEY (source, event_id)
);

CREATE TABLE IF NOT EXISTS dr_results (
    source       text NOT NULL,
    event_id     text NOT NULL,
    device_id    text NOT NULL,
    baseline     text NOT NULL,
    baseline_kw  double precision,
    planned_kw   double precision,
    measured_kw  double precision,
    delivered_kw double precision,
    computed_at  timestamptz,
    PRIMARY KEY (source, event_id, device_id, baseline)
);

ALTER TABLE dr_events ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS service_role_all ON dr_events;
CREATE POLICY service_role_all ON dr_events FOR ALL TO service_role USING (true) WITH CHECK (true);
REVOKE ALL ON dr_events FROM anon, authenticated;
GRANT ALL ON dr_events TO service_role;

ALTER TABLE dr_results ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS service_role_all ON dr_results;
CREATE POLICY service_role_all ON dr_results FOR ALL TO service_role USING (true) WITH CHECK (true);
REVOKE ALL ON dr_results FROM anon, authenticated;
GRANT ALL ON dr_results TO service_role;
