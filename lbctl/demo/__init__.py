"""``lbctl demo``: built-in backends, the proxy in front of them, and traffic to watch.

The demo backends are small aiohttp apps with distinct personalities (fast, slower, flaky),
so the balancing and the health story are visible without any server of the user's own.
The same backends serve the test suite.
"""
