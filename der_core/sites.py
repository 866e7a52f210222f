"""Several simulated sites around one configuration (``--sites N``).

Site k keeps the template's tariff and time zone, gets its own device id and seed, sits
within about 5 km of the template, and has equipment scaled around the template's: PV
and battery sizes x0.6-1.4, loads x0.7-1.3, 70 % of the template's EV ownership odds.
The draws come from the template's seed, so the same command yields the same sites.
"""

from __future__ import annotations

import numpy as np

from der_core.config import SimulatorConfig, build_config, config_to_dict


def site_configs(template: SimulatorConfig, count: int) -> list[SimulatorConfig]:
    if count <= 1:
        return [template]
    rng = np.random.default_rng([template.effective_seed, 0x517E5])
    base = config_to_dict(template)
    configs = []
    for k in range(1, count + 1):
        data = config_to_dict(template)
        data["device_id"] = f"{template.device_id}-{k:03d}"
        data["seed"] = int(rng.integers(0, 2**31))
        solar, battery, load = data["solar"], data["battery"], data["home_load"]
        solar["latitude"] = float(np.clip(base["solar"]["latitude"] + rng.uniform(-0.05, 0.05), -90, 90))
        solar["longitude"] = float(np.clip(base["solar"]["longitude"] + rng.uniform(-0.05, 0.05), -180, 180))
        pv_scale = rng.uniform(0.6, 1.4)
        solar["capacity_kw"] = round(base["solar"]["capacity_kw"] * pv_scale, 2)
        if base["solar"]["inverter_kw"] is not None:
            solar["inverter_kw"] = round(base["solar"]["inverter_kw"] * pv_scale, 2)
        solar["azimuth_degrees"] = float((base["solar"]["azimuth_degrees"] + rng.uniform(-45, 45)) % 360)
        solar["tilt_degrees"] = float(np.clip(base["solar"]["tilt_degrees"] + rng.uniform(-10, 10), 0, 90))
        battery_scale = rng.uniform(0.6, 1.4)
        for key in ("capacity_kwh", "max_charge_rate_kw", "max_discharge_rate_kw"):
            battery[key] = round(base["battery"][key] * battery_scale, 2)
        load_scale = rng.uniform(0.7, 1.3)
        for key in ("base_load_kw", "peak_load_kw", "hvac_capacity_kw"):
            load[key] = round(base["home_load"][key] * load_scale, 2)
        load["has_ev"] = bool(base["home_load"]["has_ev"] and rng.uniform() < 0.7) if base["home_load"]["has_ev"] else False
        configs.append(build_config(data, source=f"site {data['device_id']}"))
    return configs
