"""Process control: how supervisors, scripts and operators find and steer a running serve.

    pidfile.py  ``serve --pid-file``: written once listening, refused while a live serve
                holds it, taken over from a dead one, removed on exit
    signals.py  ``lbctl reload``: find the serve (its pid file, or the process serving
                that config) and send it SIGHUP
    notify.py   systemd's ``sd_notify`` protocol (READY, RELOADING, STOPPING, STATUS): one
                datagram to ``$NOTIFY_SOCKET``, no dependency

Standard library only, and nothing here imports the rest of lbctl but ``errors`` and
``exitcodes``: the serve composition root and the CLI both build on it.
"""
