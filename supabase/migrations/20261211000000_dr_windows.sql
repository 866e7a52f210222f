-- The setpoint window each opted-in demand-response event puts on each of its sites: the
-- schedule JSON the gateway is sent for that event alone (null once a modification of the
-- event no longer plans the site). A site is sent the windows of all its standing events,
-- read from here, so a restarted decider or a second one on the same database sends the same.
CREATE TABLE IF NOT EXISTS dr_windows (
    source       text NOT NULL,
    event_id     text NOT NULL,
    device_id    text NOT NULL,
    schedule     jsonb,
    computed_at  timestamptz,
    PRIMARY KEY (source, event_id, device_id)
);

ALTER TABLE dr_windows ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS service_role_all ON dr_windows;
CREATE POLICY service_role_all ON dr_windows FOR ALL TO service_role USING (true) WITH CHECK (true);
REVOKE ALL ON dr_windows FROM anon, authenticated;
GRANT ALL ON dr_windows TO service_role;
