-- Argo CD health check for lumenore.io/LumenoreConnector.
--   Healthy      Ready=True for the current generation (status.observedGeneration == metadata.generation)
--   Progressing  no status yet, status for an older generation, or Ready=False while rolling out
--   Degraded     Ready=False with a reason that needs a person: rejected spec or region, missing
--                Secret or key, rollout past its progress deadline; or Stalled=True (e.g. a write
--                an admission webhook, a policy or a quota refused: reason ApplyFailed)
--   Suspended    spec.suspend is true (Ready=False, reason Suspended)
--   Healthy      also for Ready=False reason ScaledToZero: 0 replicas were asked for (spec or HPA)
local hs = {}
local degraded = {
  InvalidSpec = true,
  InvalidObject = true,
  RegionMismatch = true,
  SecretNotFound = true,
  SecretKeyMissing = true,
  ProgressDeadlineExceeded = true,
}
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
local ready = nil
local stalled = nil
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    ready = c
  elseif c.type == "Stalled" and c.status == "True" then
    stalled = c
  end
end
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end
-- A condition stamped for an older generation is stale, whatever the top-level field says.
if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Ready condition is for generation " .. tostring(ready.observedGeneration)
  return hs
end
local msg = (ready.reason or "") .. ": " .. (ready.message or "")
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
elseif ready.reason == "ScaledToZero" then
  hs.status = "Healthy"
  hs.message = msg
elseif ready.reason == "Suspended" then
  hs.status = "Suspended"
  hs.message = msg
elseif (ready.reason ~= nil and degraded[ready.reason]) or stalled ~= nil then
  hs.status = "Degraded"
  hs.message = msg
else
  hs.status = "Progressing"
  hs.message = msg
end
return hs
