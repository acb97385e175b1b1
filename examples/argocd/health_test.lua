-- Runs health.lua the way Argo CD does (the object in global `obj`, the script's return value is the
-- health) against sample LumenoreConnector objects. Usage: lua5.4 health_test.lua (from this dir).
local here = arg[0]:match("^(.*)/") or "."
local chunk = assert(loadfile(here .. "/health.lua", "t"))

local function cond(t, s, reason, gen)
  return { type = t, status = s, reason = reason, message = reason .. " message", observedGeneration = gen,
           lastTransitionTime = "2026-11-21T12:00:00Z" }
end
local function lc(generation, status)
  return { apiVersion = "lumenore.io/v1alpha1", kind = "LumenoreConnector",
           metadata = { name = "acme", namespace = "acme", generation = generation },
           spec = { tenant = "acme" }, status = status }
end
local function conds(gen, ready_status, reason)
  return { observedGeneration = gen, conditions = {
    cond("Accepted", "True", "Accepted", gen),
    cond("Available", ready_status, ready_status == "True" and "MinimumReplicasAvailable" or "NoReplicasAvailable", gen),
    cond("Ready", ready_status, reason, gen) } }
end

local cases = {
  { "no status", lc(1, nil), "Progressing" },
  { "status without conditions", lc(1, { observedGeneration = 1 }), "Progressing" },
  { "ready, current generation", lc(3, conds(3, "True", "Ready")), "Healthy" },
  { "ready, but for an older generation", lc(4, conds(3, "True", "Ready")), "Progressing" },
  { "no observedGeneration yet", lc(1, { conditions = { cond("Ready", "True", "Ready", nil) } }), "Progressing" },
  { "stale Ready condition", lc(2, { observedGeneration = 2, conditions = { cond("Ready", "True", "Ready", 1) } }), "Progressing" },
  { "no Ready condition", lc(1, { observedGeneration = 1, conditions = { cond("Accepted", "True", "Accepted", 1) } }), "Progressing" },
  { "rollout in progress", lc(2, conds(2, "False", "RolloutInProgress")), "Progressing" },
  { "scaled to zero", lc(2, conds(2, "False", "ScaledToZero")), "Healthy" },
  { "unknown reason", lc(2, conds(2, "False", "SomethingNew")), "Progressing" },
  { "suspended", lc(2, conds(2, "False", "Suspended")), "Suspended" },
  { "secret missing", lc(1, conds(1, "False", "SecretNotFound")), "Degraded" },
  { "secret key missing", lc(1, conds(1, "False", "SecretKeyMissing")), "Degraded" },
  { "region mismatch", lc(1, conds(1, "False", "RegionMismatch")), "Degraded" },
  { "invalid spec", lc(1, conds(1, "False", "InvalidSpec")), "Degraded" },
  { "invalid object", lc(1, conds(1, "False", "InvalidObject")), "Degraded" },
  { "rollout stuck", lc(5, conds(5, "False", "ProgressDeadlineExceeded")), "Degraded" },
  { "write refused (Stalled)", lc(2, (function() local s = conds(2, "False", "ApplyFailed");
      table.insert(s.conditions, cond("Stalled", "True", "ApplyFailed", 2)); return s end)()), "Degraded" },
  { "write retried (Reconciling)", lc(2, (function() local s = conds(2, "False", "ApplyFailed");
      table.insert(s.conditions, cond("Reconciling", "True", "ApplyFailed", 2)); return s end)()), "Progressing" },
  { "degraded reason, but old generation", lc(6, conds(5, "False", "ProgressDeadlineExceeded")), "Progressing" },
}

local failed = 0
for _, c in ipairs(cases) do
  obj = c[2] -- Argo CD passes the object as the global `obj`
  local ok, hs = pcall(chunk)
  if not ok then
    failed = failed + 1
    print(string.format("FAIL  %-40s error: %s", c[1], tostring(hs)))
  elseif type(hs) ~= "table" or hs.status ~= c[3] or type(hs.message) ~= "string" then
    failed = failed + 1
    print(string.format("FAIL  %-40s got %s, want %s", c[1], type(hs) == "table" and tostring(hs.status) or type(hs), c[3]))
  else
    print(string.format("ok    %-40s %-12s %s", c[1], hs.status, hs.message))
  end
end
print(string.format("%d cases, %d failed", #cases, failed))
os.exit(failed == 0 and 0 or 1)
