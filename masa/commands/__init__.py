"""`masa` command line: one sub-command per module in `masa.commands`.

Each command module exposes `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`. `masa`
imports every command module to build its help, so a command imports what it runs (masa.runner, torch,
vLLM, DeepSpeed, kfp, boto3) inside `run`, never at the module top: that keeps `masa --help` and every
other command from paying for them. These are the only function-level imports of masa's own modules
outside the KFP component bodies (which KFP requires) and the lazy engine backends, S3 store and
algorithm registries (each says why); `tests/test_layers.py` checks they form no cycle.
"""
