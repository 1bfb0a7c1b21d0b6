-- Argo CD health check for the azureml-operator.io kinds: Workspace, FineTuneJob,
-- ModelRegistration and OnlineEndpoint (one script for all four; see the chart's README.md).
--
-- The operator writes kstatus conditions (Ready, Reconciling, Stalled), each with the
-- observedGeneration it describes. The verdict:
--   Degraded    Stalled=True for the current generation (a human must act; message = its message),
--               or a FineTuneJob whose phase is Failed or Canceled;
--   Healthy     Ready=True for the current generation;
--   Progressing anything else: no status yet, a spec change the operator has not observed, or
--               work in flight.
-- Written for Lua 5.1 (Argo CD runs health scripts in gopher-lua).

local hs = {}

local function generation_of(condition)
  if condition.observedGeneration ~= nil then
    return condition.observedGeneration
  end
  if obj.status ~= nil then
    return obj.status.observedGeneration
  end
  return nil
end

-- True when the condition describes the object's current spec.
local function is_current(condition)
  local observed = generation_of(condition)
  local generation = obj.metadata ~= nil and obj.metadata.generation or nil
  if generation == nil then
    return true
  end
  return observed ~= nil and observed == generation
end

local function message_of(condition, fallback)
  if condition ~= nil and condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  return fallback
end

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the resource"
  return hs
end

local ready, stalled, reconciling
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Ready" then
    ready = condition
  elseif condition.type == "Stalled" then
    stalled = condition
  elseif condition.type == "Reconciling" then
    reconciling = condition
  end
end

if stalled ~= nil and stalled.status == "True" and is_current(stalled) then
  hs.status = "Degraded"
  hs.message = message_of(stalled, stalled.reason or "Stalled")
  return hs
end

-- A finished FineTuneJob never runs again (its spec is immutable once submitted): a failed or
-- canceled one stays Degraded whatever its conditions say about the generation.
local phase = obj.status.phase
if phase == "Failed" or phase == "Canceled" then
  hs.status = "Degraded"
  hs.message = "The fine-tuning job ended with phase " .. phase
  if stalled ~= nil and stalled.status == "True" then
    hs.message = message_of(stalled, hs.message)
  end
  return hs
end

if ready ~= nil and ready.status == "True" and is_current(ready) then
  hs.status = "Healthy"
  hs.message = message_of(ready, "Ready")
  return hs
end

hs.status = "Progressing"
if (ready ~= nil and not is_current(ready)) or (ready == nil and stalled ~= nil and not is_current(stalled)) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(obj.metadata.generation)
elseif reconciling ~= nil and reconciling.status == "True" then
  hs.message = message_of(reconciling, "Reconciling")
else
  hs.message = message_of(ready, "Waiting for the resource to become ready")
end
return hs
