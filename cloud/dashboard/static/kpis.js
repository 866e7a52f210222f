// How both pages name and print a portfolio KPI: units spelled kW, kWh and kg, money in the
// run's currency, and one number of decimals per unit, so a column never mixes 857.4 and 1,115.72.
const KPI_MONEY = ["total_cost", "savings"];

function kpiUnit(key, currency) {
  if (key.endsWith("_kwh")) return "kWh";
  if (key.endsWith("_kw")) return "kW";
  if (key.endsWith("_kg")) return "kg";
  return KPI_MONEY.includes(key) ? currency || "" : "";
}

function kpiLabel(key, currency) {
  const unit = kpiUnit(key, currency), name = key.replace(/_(kwh|kw|kg)$/, "").replace(/_/g, " ");
  return unit ? `${name} (${unit})` : name;
}

function kpiValue(value, key) {
  if (value === undefined || value === null) return "–";
  if (typeof value !== "number") return String(value);
  const digits = KPI_MONEY.includes(key) ? 2 : kpiUnit(key, "") ? 1 : 3;
  return value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
