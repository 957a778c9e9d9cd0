// Effective NFE and speed-up text for the TMD nodes (docs/method.md §3, paper Eq. 16).
// Pure functions, no DOM and no ComfyUI import, so node's test runner can check them
// (tests/web/). Mirrors tmd_core.schedule.effective_nfe.

export const DEFAULT_HEAD_BLOCKS = 5; // H of the released Wan2.1 TMD students
export const DEFAULT_NUM_LAYERS = 30; // L of Wan2.1 1.3B (the 14B model has 40)
export const TEACHER_NFE = 100; // 50 sampling steps × 2 forwards (classifier-free guidance)

function isCount(v, min) {
  return Number.isInteger(v) && v >= min;
}

/**
 * Eq. 16: M (1 + (N - 1) H / L) teacher-forward equivalents per video.
 * Throws RangeError (message says what to change) for impossible settings.
 */
export function effectiveNFE(outerSteps, innerSteps, headBlocks, numLayers) {
  if (!isCount(outerSteps, 1) || !isCount(innerSteps, 1)) {
    throw new RangeError(
      `outer_steps and inner_steps must be integers >= 1, got ${outerSteps} and ${innerSteps}`,
    );
  }
  if (!isCount(numLayers, 2)) {
    throw new RangeError(`num_layers must be an integer >= 2, got ${numLayers}`);
  }
  if (!isCount(headBlocks, 1) || headBlocks >= numLayers) {
    throw new RangeError(
      `head_blocks must be an integer in 1..${numLayers - 1} for ${numLayers} layers, got ${headBlocks}`,
    );
  }
  return outerSteps * (1 + ((innerSteps - 1) * headBlocks) / numLayers);
}

/** Speed-up over the 50-step CFG teacher (100 NFE) at a given effective NFE. */
export function speedUp(nfe, teacherNFE = TEACHER_NFE) {
  if (!(Number.isFinite(nfe) && nfe > 0)) {
    throw new RangeError(`effective NFE must be a positive number, got ${nfe}`);
  }
  return teacherNFE / nfe;
}

/** "2.33", "1.17", "1.38", "2": two decimals at most, no trailing zeros. */
export function formatNumber(x) {
  return String(Number(x.toFixed(2)));
}

/**
 * Head blocks / layers to use for a sampler's display, best source first:
 * 1. the loader's last execution report (`tmd_info`), if it is for the checkpoint selected now;
 *    a plain teacher ("kind": "teacher") takes H from the loader's widget, L from the report;
 * 2. the loader's head_blocks widget, with L = 30 (Wan2.1 1.3B);
 * 3. H = 5, L = 30.
 * Returns {headBlocks, numLayers, source} with source "checkpoint" | "widget" | "default".
 */
export function resolveModelInfo({ info = null, ckptName = null, headBlocksWidget = null } = {}) {
  const widgetH = Number.isInteger(headBlocksWidget) ? headBlocksWidget : null;
  if (info && (info.ckptName == null || ckptName == null || info.ckptName === ckptName)) {
    const fromWidget = info.kind === "teacher" && widgetH !== null;
    return {
      headBlocks: fromWidget ? widgetH : info.headBlocks,
      numLayers: info.numLayers,
      source: "checkpoint",
    };
  }
  if (widgetH !== null) {
    return { headBlocks: widgetH, numLayers: DEFAULT_NUM_LAYERS, source: "widget" };
  }
  return { headBlocks: DEFAULT_HEAD_BLOCKS, numLayers: DEFAULT_NUM_LAYERS, source: "default" };
}

/**
 * Reads the loader's `ui` output: {"tmd_info": [{"head_blocks", "num_layers", "ckpt_name"?, "kind"?}]}.
 * Returns {headBlocks, numLayers, ckptName, kind} or null when the message has no usable info.
 */
export function parseTmdInfo(message) {
  const raw = message?.tmd_info?.[0];
  if (!raw || typeof raw !== "object") return null;
  const headBlocks = Number(raw.head_blocks);
  const numLayers = Number(raw.num_layers);
  if (!isCount(numLayers, 2) || !isCount(headBlocks, 1) || headBlocks >= numLayers) return null;
  return {
    headBlocks,
    numLayers,
    ckptName: typeof raw.ckpt_name === "string" ? raw.ckpt_name : null,
    kind: raw.kind === "teacher" ? "teacher" : "tmd",
  };
}

/**
 * The line shown on TMDSchedule/TMDSampler. outerSteps = null means the outer times come from
 * a SIGMAS input (unknown until run). Returns {text, nfe, speedUp, ok}.
 */
export function describeSchedule({ outerSteps, innerSteps, headBlocks, numLayers }) {
  const hl = `H${headBlocks}/L${numLayers}`;
  if (outerSteps == null) {
    return { ok: false, nfe: null, speedUp: null, text: `outer steps set by sigmas · ${hl}` };
  }
  let nfe;
  try {
    nfe = effectiveNFE(outerSteps, innerSteps, headBlocks, numLayers);
  } catch (e) {
    return { ok: false, nfe: null, speedUp: null, text: `invalid: ${e.message}` };
  }
  const s = speedUp(nfe);
  return {
    ok: true,
    nfe,
    speedUp: s,
    text: `NFE ${formatNumber(nfe)} · ${s.toFixed(1)}× vs 50-step CFG · ${hl}`,
  };
}
