// ComfyUI frontend extension of the TMD pack: shows the effective NFE (docs/method.md §3, Eq. 16) and
// the speed-up over a 50-step CFG teacher on TMDSchedule and TMDSampler, live as widgets and links
// change. The arithmetic lives in tmd_logic.js (tested with node's test runner); this file only
// finds the numbers in the graph and draws one line under the widgets.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { describeSchedule, parseTmdInfo, resolveModelInfo } from "./tmd_logic.js";

const SCHEDULE = "TMDSchedule";
const SAMPLER = "TMDSampler";
// nodes that give a TMD_MODEL -> their checkpoint widget (TMDApplyToModel: a TMD student applied to a native MODEL)
const LOADERS = { TMDModelLoader: "ckpt_name", TMDApplyToModel: "tmd_name" };
const LINE_HEIGHT = 20; // px added below the widgets for the summary line

function widgetValue(node, name) {
  return node?.widgets?.find((w) => w.name === name)?.value;
}

function typeOf(node) {
  return node?.comfyClass ?? node?.type;
}

// Follows an input link upstream, through legacy "Reroute" nodes (native reroutes are not nodes).
function upstream(node, inputName) {
  let slot = node?.findInputSlot?.(inputName) ?? -1;
  let src = slot >= 0 ? node.getInputNode(slot) : null;
  for (let hops = 0; src && typeOf(src) === "Reroute" && hops < 16; hops++) {
    src = src.getInputNode(0);
  }
  return src ?? null;
}

function downstreamSamplers(scheduleNode) {
  const nodes = scheduleNode.getOutputNodes?.(0) ?? []; // TMDSchedule has one output
  return nodes.filter((n) => typeOf(n) === SAMPLER);
}

function modelInfoFor(samplerNode) {
  const loader = upstream(samplerNode, "model");
  const widget = LOADERS[typeOf(loader)];
  if (!widget) return resolveModelInfo();
  return resolveModelInfo({
    info: loader.tmdInfo ?? null,
    ckptName: widgetValue(loader, widget) ?? null,
    headBlocksWidget: widgetValue(loader, "head_blocks") ?? null,
  });
}

// The settings a node's line is computed from, or null when there is nothing to show yet.
function summaryFor(node) {
  let schedule = node;
  let sampler = null;
  if (typeOf(node) === SAMPLER) {
    sampler = node;
    schedule = upstream(node, "schedule");
    if (!schedule || typeOf(schedule) !== SCHEDULE) return null;
  } else {
    sampler = downstreamSamplers(node)[0] ?? null;
  }
  const sigmasLinked = upstream(schedule, "sigmas") !== null;
  const model = sampler ? modelInfoFor(sampler) : resolveModelInfo();
  return describeSchedule({
    outerSteps: sigmasLinked ? null : widgetValue(schedule, "outer_steps"),
    innerSteps: widgetValue(schedule, "inner_steps"),
    headBlocks: model.headBlocks,
    numLayers: model.numLayers,
  });
}

function drawSummary(node, ctx) {
  if (node.flags?.collapsed) return;
  const summary = summaryFor(node);
  node.tmdSummary = summary; // read by tests/screenshots; null when not connected
  if (!summary) return;
  ctx.save();
  ctx.font = "12px Arial";
  ctx.fillStyle = summary.ok ? "#8fd18f" : "#e0a060";
  ctx.textAlign = "left";
  ctx.fillText(summary.text, 10, node.size[1] - 6, node.size[0] - 20);
  ctx.restore();
}

function chain(proto, name, fn) {
  const original = proto[name];
  proto[name] = function (...args) {
    const r = original?.apply(this, args);
    fn.apply(this, [r, ...args]);
    return r;
  };
}

// Asks the pack's route what the selected checkpoint holds (header only), so the line is right before the
// loader runs, after a page reload and when the loader's output is cached (onExecuted not called again).
async function fetchCheckpointInfo(loader) {
  const widget = LOADERS[typeOf(loader)];
  const name = widgetValue(loader, widget);
  if (typeof name !== "string" || loader.tmdInfo?.ckptName === name) return;
  try {
    const res = await api.fetchApi(`/tmd/checkpoint_info?ckpt_name=${encodeURIComponent(name)}`);
    if (!res.ok || widgetValue(loader, widget) !== name) return; // refused, or changed meanwhile
    const info = parseTmdInfo(await res.json());
    if (info) {
      loader.tmdInfo = info;
      app.graph?.setDirtyCanvas?.(true, false);
    }
  } catch (e) {
    console.warn("TMD: checkpoint info", name, e);
  }
}

app.registerExtension({
  name: "tmd.effective_nfe",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const name = nodeData?.name;
    if (name in LOADERS) {
      chain(nodeType.prototype, "onExecuted", function (_r, message) {
        const info = parseTmdInfo(message);
        if (info) {
          this.tmdInfo = info;
          this.setDirtyCanvas?.(true, false);
        }
      });
      chain(nodeType.prototype, "onWidgetChanged", function (_r, widgetName) {
        if (widgetName === LOADERS[name]) fetchCheckpointInfo(this);
        this.setDirtyCanvas?.(true, false);
      });
      for (const hook of ["onNodeCreated", "onConfigure"]) {
        chain(nodeType.prototype, hook, function () {
          fetchCheckpointInfo(this);
        });
      }
      return;
    }
    if (name !== SCHEDULE && name !== SAMPLER) return; // other packs' nodes: untouched
    const proto = nodeType.prototype;
    const computeSize = proto.computeSize;
    proto.computeSize = function (...args) {
      const size = computeSize.apply(this, args);
      return [size[0], size[1] + LINE_HEIGHT];
    };
    chain(proto, "onDrawForeground", function (_r, ctx) {
      drawSummary(this, ctx);
    });
    for (const hook of ["onWidgetChanged", "onConnectionsChange"]) {
      chain(proto, hook, function () {
        this.setDirtyCanvas?.(true, false);
      });
    }
  },
});
