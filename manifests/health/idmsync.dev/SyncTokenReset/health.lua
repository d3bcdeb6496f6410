-- Argo CD health of an idmsync.dev SyncTokenReset: a one-shot reset of IDM liveSync tokens.
--   Healthy      Ready is True for the current generation (and the current rerun request)
--   Degraded     Stalled is True or the phase is Failed; the message starts with the reason
--   Progressing  everything else: not started yet, running, retrying, a generation or a rerun
--                the operator has not answered yet, being deleted
-- Runs with only Lua's base, table and package libraries (an argocd-cm customization): no
-- string library here.
local health = {}

local function condition(status, kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, item in ipairs(status.conditions) do
    if item.type == kind then
      return item
    end
  end
  return nil
end

local function explain(item)
  if item == nil then
    return ""
  end
  local text = item.reason or ""
  if item.message ~= nil and item.message ~= "" then
    if text ~= "" then
      text = text .. ": "
    end
    text = text .. item.message
  end
  return text
end

local metadata = obj.metadata or {}
local status = obj.status
local generation = metadata.generation
local annotations = metadata.annotations or {}
local rerun = annotations["idmsync.dev/rerun"] or ""

if metadata.deletionTimestamp ~= nil then
  health.status = "Progressing"
  health.message = "being deleted"
  return health
end

if status == nil or status.phase == nil then
  health.status = "Progressing"
  health.message = "waiting for the operator to start the reset"
  return health
end

if generation ~= nil and status.observedGeneration ~= generation then
  health.status = "Progressing"
  health.message = "waiting for the operator to observe generation " .. tostring(generation)
  return health
end

if (status.rerun or "") ~= rerun then
  health.status = "Progressing"
  health.message = "rerun " .. rerun .. " requested; waiting for the operator to start it"
  return health
end

local ready = condition(status, "Ready")
local stalled = condition(status, "Stalled")
local reconciling = condition(status, "Reconciling")

if (stalled ~= nil and stalled.status == "True") or status.phase == "Failed" then
  health.status = "Degraded"
  if stalled ~= nil and stalled.status == "True" then
    health.message = explain(stalled)
  elseif ready ~= nil then
    health.message = explain(ready)
  else
    health.message = "Failed"
  end
  return health
end

if ready ~= nil and ready.status == "True" and status.phase == "Succeeded"
    and (ready.observedGeneration == nil or ready.observedGeneration == generation) then
  health.status = "Healthy"
  health.message = explain(ready)
  return health
end

health.status = "Progressing"
if reconciling ~= nil and reconciling.status == "True" and reconciling.reason ~= "Running" then
  -- a retry after a temporary failure: say why and when the next attempt is
  health.message = "retrying after " .. explain(ready) .. " (" .. (reconciling.message or "") .. ")"
elseif ready ~= nil then
  health.message = explain(ready)
else
  health.message = status.phase
end
return health
