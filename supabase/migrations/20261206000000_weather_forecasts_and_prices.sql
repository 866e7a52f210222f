-- Inputs fetched from outside services (cloud/live), kept with the time they became known so
-- that a forecast or plan made at t reads only what was available at t.
-- weather_forecasts.ts is the instant the values describe; prices.ts..end_ts the interval a price holds for.
CREATE TABLE IF NOT EXISTS weather_forecasts (
    device_id           text NOT NULL,
    source              text NOT NULL,
    issued_at           timestamptz NOT NULL,
    ts                  timestamptz NOT NULL,
    ghi_w_m2            double precision,
    dni_w_m2            double precision,
    dhi_w_m2            double precision,
    temp_air_c          double precision,
    cloud_cover_percent double precision,
    wind_speed_m_s      double precision,
    pv_kw               double precision,
    fetched_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, source, issued_at, ts)
);
CREATE INDEX IF NOT EXISTS weather_forecasts_device_id_ts_idx ON weather_forecasts (device_id, ts);

CREATE TABLE IF NOT EXISTS prices (
    source        text NOT NULL,
    area          text NOT NULL,
    ts            timestamptz NOT NULL,
    end_ts        timestamptz,
    published_at  timestamptz NOT NULL,
    kind          text,
    price_per_kwh double precision,
    currency      text,
    fetched_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, area, ts, published_at)
);

ALTER TABLE weather_forecasts ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS service_role_all ON weather_forecasts;
CREATE POLICY service_role_all ON weather_forecasts FOR ALL TO service_role USING (true) WITH CHECK (true);
REVOKE ALL ON weather_forecasts FROM anon, authenticated;
GRANT ALL ON weather_forecasts TO service_role;

ALTER TABLE prices ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS service_role_all ON prices;
CREATE POLICY service_role_all ON prices FOR ALL TO service_role USING (true) WITH CHECK (true);
REVOKE ALL ON prices FROM anon, authenticated;
GRANT ALL ON prices TO service_role;
