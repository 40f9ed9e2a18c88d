"""The command line's argument parsing, one module a command; each command is a thin call of a
library function (as huggingface_hub's ``cli/`` over ``HfApi``).

A module here has ``register(subparsers)``, which adds its subcommand(s) and sets ``func`` to a
function of the parsed arguments. Heavy imports (torch, transformers) stay inside those
functions, so ``stentor-hub --help`` is fast. :mod:`stentor_hub.cli` puts them together.
"""

# the order of `stentor-hub --help`
COMMAND_MODULES = ("tokenizer", "data", "train", "evaluate", "card", "publish", "export", "space", "quickstart")
