"""erq's tests.

Their Hypothesis properties check what the code does, never how fast: they
run beside busy loops too (the writer's tests are run under CPU load), where
a draw or an example can wait for the CPU for a second.  So no example has a
deadline and slow input generation is no failure, unless a test says so.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "erq", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("erq")
