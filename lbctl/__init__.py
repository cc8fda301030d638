"""lbctl: an HTTP load balancer and small API gateway that you can simulate before you deploy.

The package is laid out along the data flow::

    config/     TOML file -> typed, validated, immutable objects
    balancing/  pools of backends and the algorithms that rank them (pure code:
                the clock and the random generator are passed in)
    discovery/  DNS, SRV and file sources, and who is in each pool between reloads
                (decided here; the proxy applies it to the live pools)
    health/     active probes, passive outlier ejection and ``lbctl check``: they
                write the health and ejection state the pools read
    cli/        thin click commands: parse, call one library function, render

The live proxy and the simulator both drive the objects in ``balancing``; neither
carries its own copy of an algorithm.
"""

__version__ = "0.1.0"
