"""What runs an instance of ``lbctl serve``: the composition root, above every other part.

    instance.py  ``Instance``: the data plane (``proxy.ProxyServer``) with the parts that run
                 the instance around it: active health checks (``health``), discovery
                 (``discovery``: who is in each pool, handed to the data plane as data), the
                 observer (``observe``: accounting, access log, explain) and the admin API
                 (``admin``); start, reload, drain and close in the right order
    main.py      the ``serve`` command's process: load the config, install uvloop, signals
                 (SIGTERM/SIGINT drain, SIGHUP reload, SIGUSR1 reopens the access log), the
                 pid file and systemd's notifications (``lbctl.control``), and the event
                 log's lines for each step

The data plane of one process (``lbctl.proxy``) depends on none of these: it is handed its
hooks and its config, so it can run alone, or, later, as one of several worker processes
beside a process that runs the rest.
"""
