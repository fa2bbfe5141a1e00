"""`{{name}}`: a phasegate task. Counts the words of its input text.

Config: `min-words` (default 1) — fewer words than that is an invalid input.
"""

import phasegate_plugin as pg
from phasegate_plugin import WitWorld  # noqa: F401  (componentize-py binds this class)


# config_schema: what `phasegate validate` checks the pipeline's `config` against.
@pg.task(name="{{name}}", version="0.1.0", description="{{description}}",
         config_schema={"type": "object", "properties": {"min-words": {"type": "integer", "minimum": 0}}, "additionalProperties": False})
def run(req: pg.Request):
    text = req.raw_input
    words = len(text.split())
    minimum = req.config.get("min-words", 1)
    if words < minimum:
        raise pg.InvalidInput(f"the input has {words} word(s), fewer than min-words = {minimum}")
    pg.log.info(f"{words} word(s) in task `{req.task}`")
    return {"words": words, "chars": len(text), "language": "python"}
