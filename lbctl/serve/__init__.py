"""What runs an instance of ``lbctl serve``: the composition root, above every other part.

    instance.py    ``Instance``: the data plane (``proxy.ProxyServer``) with the parts that
                   run the instance around it: active health checks (``health``), discovery
                   (``discovery``: who is in each pool, handed to the data plane as data), the
                   observer (``observe``: accounting, access log, explain) and the admin API
                   (``admin``); start, reload, drain and close in the right order
    main.py        the ``serve`` command's process: load the config, install uvloop
                   (``loop.py``), signals (SIGTERM/SIGINT drain, SIGHUP reload, SIGUSR1
                   reopens the access log), the pid file and systemd's notifications
                   (``lbctl.control``), the event log's lines for each step; one
                   ``Instance``, or a ``Master`` and its workers

With several workers (``[server] workers``), one instance is several processes:

    master.py      ``Master``: what happens once per instance (config, the claimed address,
                   admin API, health checks, discovery, ejections, the event log), the
                   workers' supervision, and the instance's view of their figures
    listen.py      the claim on the listening address that the workers share
    forkserver.py  the template process the workers are forked from, and the master's handle
    workers.py     the master's handle on one worker process
    worker.py      the worker process: the data plane, run as the master says
    channel.py     length-prefixed JSON messages between master and worker
    state.py       backends' states, master -> worker
    outcomes.py    passive outcomes, worker -> master

The data plane of one process (``lbctl.proxy``) depends on none of these: it is handed its
hooks, its config and its members, so it runs alone or as one of several workers.
"""
