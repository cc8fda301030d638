"""The ``lbctl`` command line: thin click commands that parse, call one library function, render.

Each command lives in a module of this package named after it; ``main`` adds every one that
is present. A ``UserError`` raised anywhere below prints as one line on stderr and sets the
exit code; it never shows a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from lbctl import __version__
from lbctl.errors import UserError

# The order here is the order of `lbctl --help`.
COMMANDS = ["demo", "serve", "reload", "validate", "check", "simulate", "stats", "backend",
            "completion"]


class LbctlGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            # A config error is already one "FILE: KEY.PATH: problem" line per problem.
            message = str(exc) if getattr(exc, "problems", None) else f"lbctl: {exc}"
            click.echo(message, err=True)
            ctx.exit(exc.exit_code)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if name in self.commands]


@click.group(cls=LbctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lbctl")
def main() -> None:
    """lbctl: an HTTP load balancer and small API gateway you can simulate before you deploy.

    \b
    Example:
      lbctl demo                 # three demo backends behind the proxy, with live stats
      lbctl validate lb.toml     # check a config without starting anything
      lbctl serve lb.toml        # run the proxy
    """


for _name in COMMANDS:
    if importlib.util.find_spec(f"lbctl.cli.{_name}") is not None:
        _module = importlib.import_module(f"lbctl.cli.{_name}")
        main.add_command(_module.command, _name)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
