"""Generates values.schema.json from values.yaml (types, defaults, `## @param` descriptions)
plus the constraints below.

Run from anywhere: python helm/newswatch/tools/gen_values_schema.py
"""

import json
import re
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[1]
src = (CHART / "values.yaml").read_text()
values = yaml.safe_load(src)
params = dict(re.findall(r"^\s*## @param (\S+) (.*)$", src, re.M))
ENUMS = {
    "image.pullPolicy": ["Always", "IfNotPresent", "Never"],
    "gpuImage.pullPolicy": ["Always", "IfNotPresent", "Never"],
    "kafka.securityProtocol": ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"],
    "kafka.saslMechanism": ["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"],
    "logLevel": ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
    "model.source": ["image", "volume"],
    "classifyCpu.variant": ["int8", "fp32"],
    "classifyGpu.variant": ["fp16", "fp32", "int8"],
    "autoscaling.mode": ["none", "keda", "hpa"],
    "autoscaling.keda.trigger": ["kafka", "prometheus"],
}
MINS = {
    "kafka.partitions": 1,
    "kafka.replicationFactor": 1,
    "metrics.port": 1,
    "metrics.topKEntities": 1,
    "classifyCpu.replicaCount": 0,
    "classifyGpu.replicaCount": 0,
    "aggregate.replicaCount": 0,
    "alerts.replicaCount": 0,
    "notify.replicaCount": 0,
    "classifyGpu.gpus": 1,
    "classifyGpu.batchSize": 1,
    "classifyCpu.cpuStreams": 0,
    "classifyCpu.intraOpThreads": 0,
    "autoscaling.minReplicas": 0,
    "autoscaling.maxReplicas": 1,
    "autoscaling.keda.lagThreshold": 1,
    "autoscaling.keda.activationLagThreshold": 0,
    "autoscaling.keda.pollingInterval": 1,
    "autoscaling.keda.cooldownPeriod": 0,
    "autoscaling.hpa.targetCPUUtilizationPercentage": 1,
    "autoscaling.hpa.lagPerPod": 0,
    "broker.port": 1,
    "terminationGracePeriodSeconds": 0,
}
MAXS = {
    "aggregate.replicaCount": 1,
    "metrics.port": 65535,
    "broker.port": 65535,
    "autoscaling.hpa.targetCPUUtilizationPercentage": 100,
}
PATTERNS = {
    "secrets.webhookSecret": "^(whsec_[A-Za-z0-9+/]+={0,2})?$",
    "image.digest": "^(sha256:[a-f0-9]{64})?$",
    "gpuImage.digest": "^(sha256:[a-f0-9]{64})?$",
    "tmpSizeLimit": "^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$",
    "aggregate.dataSizeLimit": "^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$",
    "metrics.serviceMonitor.interval": "^[0-9]+(ms|s|m|h)$",
    "metrics.serviceMonitor.scrapeTimeout": "^[0-9]+(ms|s|m|h)$",
}
CIDR = "^([0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}|[0-9a-fA-F:]+/[0-9]{1,3})$"
ITEMS = {
    "image.pullSecrets": {"type": "string"},
    "secrets.webhookUrls": {"type": "string", "pattern": "^https?://"},
    "classifyGpu.providers": {"type": "string"},
    "networkPolicy.kafkaPorts": {"type": "integer", "minimum": 1, "maximum": 65535},
    "networkPolicy.webhookPorts": {"type": "integer", "minimum": 1, "maximum": 65535},
    "networkPolicy.kafkaCidrs": {"type": "string", "pattern": CIDR},
    "networkPolicy.webhookCidrs": {"type": "string", "pattern": CIDR},
}
# extraEnv / extraVolumes / extraVolumeMounts, global and per stage: Kubernetes objects
# with their required keys
for _prefix in ("", "classifyCpu.", "classifyGpu.", "aggregate.", "alerts.", "notify."):
    ITEMS[_prefix + "extraEnv"] = {"type": "object", "required": ["name"]}
    ITEMS[_prefix + "extraVolumes"] = {"type": "object", "required": ["name"]}
    ITEMS[_prefix + "extraVolumeMounts"] = {"type": "object", "required": ["name", "mountPath"]}
# the job name goes into PromQL label matchers (job="<metrics.job>") and the runbook base into URLs
PATTERNS["metrics.job"] = "^[A-Za-z0-9_.:/-]+$"
PATTERNS["metrics.prometheusRule.runbookBaseUrl"] = "^https?://[^#\\s]+$"


def typ(v):
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "null"


def build(v, path):
    s = {}
    if path in params:
        s["description"] = params[path]
    if isinstance(v, dict) and (path not in params or path == ""):
        s["type"] = "object"
        s["properties"] = {k: build(x, f"{path}.{k}" if path else k) for k, x in v.items()}
        s["additionalProperties"] = False
        return s
    t = typ(v)
    s["type"] = t
    if path in ENUMS:
        s["enum"] = ENUMS[path]
    if path in MINS:
        s["minimum"] = MINS[path]
    if path in MAXS:
        s["maximum"] = MAXS[path]
    if path in PATTERNS:
        s["pattern"] = PATTERNS[path]
    if t == "array":
        s["items"] = ITEMS.get(path, {"type": "object"})
    if path.endswith("resources"):
        s["properties"] = {"requests": {"type": "object"}, "limits": {"type": "object"}}
        s["additionalProperties"] = False
    if t in ("string", "integer", "number", "boolean", "array", "object"):
        s["default"] = v
    return s


schema = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "newswatch chart values",
    **build(values, ""),
}
# a parent (umbrella) chart passes `global` to its subcharts
schema["properties"]["global"] = {
    "type": "object",
    "description": "Values of a parent chart shared with its subcharts (unused here)",
}
schema.pop("description", None)
# object-typed free-form maps keep additionalProperties open
with (CHART / "values.schema.json").open("w") as out:
    json.dump(schema, out, indent=2)
missing = [p for p in params if p not in json.dumps(schema)]
print("params", len(params))
