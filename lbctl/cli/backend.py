"""``lbctl backend disable|enable|drain|weight|add|remove``."""

from __future__ import annotations

import json

import click

from lbctl.balancing.backend import checked_weight
from lbctl.cli.params import Number, admin_client, admin_options

_json = click.option("--json", "as_json", is_flag=True, help="Print the backend's new state as JSON.")


@click.group()
def command() -> None:
    """Operate on one backend of a running `lbctl serve` through its admin API.

    Changes apply to the next request and survive config reloads; a restart forgets them.
    Exit codes: 0 done; 1 admin API unreachable or it refused; 2 bad usage.

    \b
    Example:
      lbctl backend drain api api-1        # no new requests; in-flight ones finish
      lbctl backend enable api api-1
      lbctl backend weight api api-1 5
      lbctl backend add api http://10.0.0.7:8080 --name api-7 --weight 2
      lbctl backend remove api api-7       # drains, then it is gone
    """


def _say(answer: dict, as_json: bool, line) -> None:
    """The admin API's answer as JSON, or one line: ``line(pool, backend)``."""
    if as_json:
        click.echo(json.dumps(answer, indent=2))
    else:
        click.echo(line(answer["pool"], answer["backend"]))


def _run(url, config_path, token, as_json, pool, name, action, weight=None) -> None:
    answer = admin_client(url, config_path, token).backend(pool, name, action, weight)
    _say(answer, as_json, lambda p, b: f"{p}/{b['name']}: {b['state']}, weight "
                                       f"{b['weight']:g}, {b['inflight']} in flight")


def _action(action: str, help_text: str):
    @command.command(action, help=help_text)
    @click.argument("pool")
    @click.argument("name")
    @admin_options
    @_json
    def run(pool, name, url, config_path, token, as_json):
        _run(url, config_path, token, as_json, pool, name, action)
    return run


_action("disable", "Send no traffic at all to backend NAME of POOL.\n\n"
        "\b\nExample:\n  lbctl backend disable api api-1")
_action("enable", "Return backend NAME of POOL to service (health checks still apply).\n\n"
        "\b\nExample:\n  lbctl backend enable api api-1")
_action("drain", "No new requests to backend NAME of POOL; requests in flight finish.\n\n"
        "\b\nExample:\n  lbctl backend drain api api-1")


def _checked_weight(ctx, param, value: float) -> float:
    try:
        return checked_weight(value)
    except ValueError as exc:           # the same range as the config and the admin API
        raise click.BadParameter(str(exc)) from None


@command.command("weight")
@click.argument("pool")
@click.argument("name")
@click.argument("weight", type=float, callback=_checked_weight)
@admin_options
@_json
def weight(pool, name, weight, url, config_path, token, as_json):
    """Set the weight of backend NAME of POOL (0.01 to 1000), until a restart.

    The weight survives a reload unless the config file's weight for this backend changes.

    \b
    Example:
      lbctl backend weight api api-1 5
    """
    _run(url, config_path, token, as_json, pool, name, "weight", weight)


@command.command("add")
@click.argument("pool")
@click.argument("backend_url", metavar="URL")
@click.option("--name", default=None, metavar="NAME", help="The backend's name (default host:port).")
@click.option("--weight", type=Number(min=0.01, max=1000), default=None,
              help="Weight, 0.01 to 1000 (default 1).")
@admin_options
@_json
def add(pool, backend_url, name, weight, url, config_path, token, as_json):
    """Add a backend at URL to POOL of a running serve, at once (with the pool's slow start).

    A reload (SIGHUP) keeps it; a restart forgets it: write it into the config file to keep
    it for good.

    \b
    Example:
      lbctl backend add api http://10.0.0.7:8080 --name api-7 --weight 2
    """
    answer = admin_client(url, config_path, token).add(pool, backend_url, name, weight)
    _say(answer, as_json, lambda p, b: f"{p}/{b['name']}: added ({b['url']}, weight "
                                       f"{b['weight']:g}), {b['state']}")


@command.command("remove")
@click.argument("pool")
@click.argument("name")
@admin_options
@_json
def remove(pool, name, url, config_path, token, as_json):
    """Remove backend NAME from POOL of a running serve: no new requests from now on, those in
    flight finish, then it is gone.

    A backend from the config file comes back at the next reload (the file lists it); one
    found by discovery cannot be removed here (remove it at the source).

    \b
    Example:
      lbctl backend remove api api-7
    """
    answer = admin_client(url, config_path, token).remove(pool, name)
    _say(answer, as_json, lambda p, b: f"{p}/{b['name']}: removed" + (
        f"; {b['inflight']} request(s) in flight finish first" if b["state"] == "leaving"
        else ""))
