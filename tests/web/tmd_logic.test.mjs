// node --test tests/web/   — checks web/tmd_logic.js against docs/method.md §3 (Eq. 16).
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  DEFAULT_HEAD_BLOCKS,
  DEFAULT_NUM_LAYERS,
  describeSchedule,
  effectiveNFE,
  formatNumber,
  parseTmdInfo,
  resolveModelInfo,
  speedUp,
} from "../../web/tmd_logic.js";

test("effective NFE matches the docs/method.md §3 check values", () => {
  assert.equal(formatNumber(effectiveNFE(2, 2, 5, 30)), "2.33");
  assert.equal(formatNumber(effectiveNFE(1, 2, 5, 30)), "1.17");
  assert.equal(effectiveNFE(1, 4, 5, 40), 1.375);
  assert.ok(Math.abs(effectiveNFE(2, 2, 5, 30) - 7 / 3) < 1e-12);
});

test("one inner step costs exactly one teacher forward per outer step", () => {
  for (const m of [1, 2, 3, 8]) assert.equal(effectiveNFE(m, 1, 5, 30), m);
});

test("speed-up over the 50-step CFG teacher is 100 / NFE", () => {
  assert.equal(speedUp(effectiveNFE(2, 2, 5, 30)).toFixed(1), "42.9");
  assert.equal(speedUp(1), 100);
  assert.equal(speedUp(effectiveNFE(1, 4, 5, 40)).toFixed(2), "72.73");
});

test("invalid settings raise RangeError naming the bad value", () => {
  assert.throws(() => effectiveNFE(0, 2, 5, 30), /outer_steps and inner_steps.*got 0/);
  assert.throws(() => effectiveNFE(2, 1.5, 5, 30), /inner_steps.*1\.5/);
  assert.throws(() => effectiveNFE(2, 2, 30, 30), /head_blocks must be an integer in 1\.\.29 .*got 30/);
  assert.throws(() => effectiveNFE(2, 2, 0, 30), /head_blocks/);
  assert.throws(() => effectiveNFE(2, 2, 5, 1), /num_layers/);
  assert.throws(() => effectiveNFE("2", 2, 5, 30), RangeError);
  assert.throws(() => speedUp(0), /positive/);
  assert.throws(() => speedUp(Number.NaN), /positive/);
});

test("describeSchedule text carries NFE, speed-up and H/L; errors are shown, not thrown", () => {
  const d = describeSchedule({ outerSteps: 2, innerSteps: 2, headBlocks: 5, numLayers: 30 });
  assert.equal(d.ok, true);
  assert.equal(d.text, "NFE 2.33 · 42.9× vs 50-step CFG · H5/L30");
  const bad = describeSchedule({ outerSteps: 2, innerSteps: 2, headBlocks: 40, numLayers: 30 });
  assert.equal(bad.ok, false);
  assert.match(bad.text, /^invalid: head_blocks/);
  const sig = describeSchedule({ outerSteps: null, innerSteps: 2, headBlocks: 5, numLayers: 30 });
  assert.equal(sig.ok, false);
  assert.match(sig.text, /sigmas/);
});

test("parseTmdInfo reads the loader's ui message and rejects unusable ones", () => {
  assert.deepEqual(parseTmdInfo({ tmd_info: [{ head_blocks: 5, num_layers: 40, ckpt_name: "a.safetensors" }] }), {
    headBlocks: 5,
    numLayers: 40,
    ckptName: "a.safetensors",
    kind: "tmd",
  });
  assert.equal(parseTmdInfo({ tmd_info: [{ head_blocks: 5, num_layers: 40, kind: "teacher" }] }).kind, "teacher");
  // a TMD patch (the checkpoint route's "patch", TMDApplyToModel's "native") fixes H like a student
  assert.equal(parseTmdInfo({ tmd_info: [{ head_blocks: 5, num_layers: 30, kind: "patch" }] }).kind, "tmd");
  assert.equal(parseTmdInfo({ tmd_info: [{ head_blocks: 5, num_layers: 30, kind: "native", source: "patch" }] }).kind, "tmd");
  assert.equal(parseTmdInfo(undefined), null);
  assert.equal(parseTmdInfo({ images: [] }), null);
  assert.equal(parseTmdInfo({ tmd_info: [{ head_blocks: 40, num_layers: 40 }] }), null);
  assert.equal(parseTmdInfo({ tmd_info: [{ head_blocks: "x", num_layers: 30 }] }), null);
});

test("resolveModelInfo prefers the checkpoint report, then the widget, then 5/30", () => {
  assert.deepEqual(resolveModelInfo(), {
    headBlocks: DEFAULT_HEAD_BLOCKS,
    numLayers: DEFAULT_NUM_LAYERS,
    source: "default",
  });
  assert.deepEqual(resolveModelInfo({ headBlocksWidget: 3 }), { headBlocks: 3, numLayers: 30, source: "widget" });
  const info = { headBlocks: 5, numLayers: 40, ckptName: "big.safetensors", kind: "tmd" };
  // a TMD checkpoint fixes H: the widget does not override it
  assert.deepEqual(resolveModelInfo({ info, ckptName: "big.safetensors", headBlocksWidget: 3 }), {
    headBlocks: 5,
    numLayers: 40,
    source: "checkpoint",
  });
  // a teacher: L from the report, H from the widget (it builds the student)
  const teacher = { ...info, kind: "teacher" };
  assert.equal(resolveModelInfo({ info: teacher, ckptName: "big.safetensors", headBlocksWidget: 3 }).headBlocks, 3);
  // a report for another file is stale
  assert.equal(resolveModelInfo({ info, ckptName: "other.safetensors", headBlocksWidget: 3 }).source, "widget");
});
