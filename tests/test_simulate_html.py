"""``lbctl simulate --html``: one offline file, checked in a real headless browser."""

from __future__ import annotations

from click.testing import CliRunner

from lbctl.cli import main
from tests.browser import browser, console_entries  # noqa: F401  (browser is a fixture)

SCENARIO = """
seed = 2
algorithms = ["round_robin", "least_conn", "p2c"]
[workload]
load = 0.7
duration = "40s"
[proxy]
retries = 1
retry_on = ["connect", "reset", "timeout"]
timeout = "300ms"
[proxy.health]
interval = "1s"
fall = 2
[[backends]]
count = 5
concurrency = 4
service = { dist = "lognormal", mean = "20ms", p99 = "120ms" }
[[timeline]]
at = "10s"
backend = "b2"
event = "error"
fraction = 0.5
[[timeline]]
at = "20s"
backend = "b4"
event = "down"
[[timeline]]
at = "30s"
backend = ["b2", "b4"]
event = "recover"
"""

CHARTS = ("cdf", "p99-time", "errors-time", "share", "errors")


def test_html_report_loads_offline_without_console_errors_and_every_chart_has_data(
        browser, tmp_path):
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["simulate", str(scenario), "--seeds", "2",
                                       "--html", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    # Self-contained: nothing to fetch, and a policy that forbids fetching anything.
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page and "<script" not in page
    assert "default-src 'none'" in page
    driver = browser
    driver.get(out.as_uri())
    assert driver.title == "lbctl simulate report"
    drawn = driver.execute_script("""
        const out = {};
        for (const svg of document.querySelectorAll('svg[data-chart]')) {
          const series = svg.querySelectorAll('.series');
          let points = 0;
          for (const s of series) {
            if (s.points) points += s.points.numberOfItems;      // a polyline
            else points += s.querySelectorAll('rect').length || (s.tagName == 'rect' ? 1 : 0);
          }
          out[svg.dataset.chart] = {series: series.length, points: points,
                                    width: svg.getBoundingClientRect().width};
        }
        out.events = document.querySelectorAll('svg[data-chart="p99-time"] .event').length;
        out.verdict = document.querySelector('.verdict .lead').textContent;
        return out;""")
    assert console_entries(driver) == []
    for chart in CHARTS:
        assert drawn[chart]["series"] >= 1 and drawn[chart]["points"] >= 1, (chart, drawn)
        assert drawn[chart]["width"] > 100, (chart, drawn)
    # One line per algorithm, a point per interval or CDF step; the events are marked.
    assert drawn["cdf"]["series"] == 3 and drawn["cdf"]["points"] > 3 * 20
    assert drawn["p99-time"]["series"] == 3 and drawn["p99-time"]["points"] >= 3 * 15
    assert drawn["share"]["points"] == 3 * 5
    assert drawn["events"] == 3
    assert "over 2 seeds" in drawn["verdict"]


def test_html_escapes_what_it_writes(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text('algorithms = ["p2c"]\n[workload]\nrequests = 2000\n'
                        '[[backends]]\nname = "<b>&x"\n')
    out = tmp_path / "r.html"
    assert CliRunner().invoke(main, ["simulate", str(scenario), "--html", str(out)]).exit_code == 0
    page = out.read_text()
    assert "<b>&x" not in page and "&lt;b&gt;&amp;x" in page
