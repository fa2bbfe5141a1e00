// `{{name}}`: a phasegate task. Counts the words of its input text.
//
// Config: `min-words` (default 1) — fewer words than that is an invalid input.

import { task, InvalidInput, log } from "./phasegate-plugin.js";

export const { metadata, run } = task({
  name: "{{name}}",
  version: "0.1.0",
  description: "{{description}}",
  // What `phasegate validate` checks the pipeline's `config` against.
  configSchema: {"type": "object", "properties": {"min-words": {"type": "integer", "minimum": 0}}, "additionalProperties": false},
  run(req) {
    const text = req.rawInput;
    const words = text.split(/\s+/).filter((w) => w !== "").length;
    const min = req.config["min-words"] ?? 1;
    if (words < min) throw new InvalidInput(`the input has ${words} word(s), fewer than min-words = ${min}`);
    log.info(`${words} word(s) in task \`${req.task}\``);
    return { words, chars: [...text].length, language: "js" };
  },
});
