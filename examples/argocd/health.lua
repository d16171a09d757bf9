-- Argo CD health for a Jetway object (every kind writes the same three conditions):
-- Healthy when Jetway reconciled its generation and it is Ready, Degraded when a
-- change is refused (Stalled), Progressing otherwise, a new object not yet seen
-- included (the CRDs default status.observedGeneration to 0).
hs = { status = "Progressing", message = "Waiting for Jetway" }
if obj.status == nil or obj.status.conditions == nil then return hs end
if obj.status.observedGeneration ~= obj.metadata.generation then return hs end
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Stalled" and c.status == "True" then
    return { status = "Degraded", message = c.message }
  end
end
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" and c.status == "True" then
    return { status = "Healthy", message = c.message }
  end
  if c.type == "Ready" then hs.message = c.message end
end
return hs
